"""`lasagna eval`: measured quality of relighting, Lasagna (SDS into a template's layers) against two baselines.

`run` edits each held-out case (`evaluate`) and lights photos without ground truth (`photo_directions`),
through `shading` (the distillations, in this process or in `jobs` workers);
`metrics` says what is measured (PSNR, SSIM, chroma drift, edge similarity, shading strength, direction
accuracy, cast-shadow IoU, the error near outlines, the Light layer's hue); `colouring` measures colourings (flats) against the truth's regions; `report` holds the results (`EvalReport`), summarises them and writes the table or the JSON.
Nothing here prints; `on_progress` reports (done, total, method).
"""
