"""benchmarks/results.json -> the tables of benchmarks/RESULTS.md (the prose around them lives here too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import flats


def _ms(part: dict[str, Any] | None) -> str:
    if not part:
        return "-"
    return f"{part['median_ms']:.1f} ±{part['mad_pct']:.0f}%"


def _f(x: Any, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _step_rows(name: str, r: dict[str, Any]) -> list[str]:
    if not r or "error" in r:
        return [f"| {name} | not measured: {r.get('error', 'missing') if r else 'missing'} |"]
    p = r["parts"]
    step = r["step"]["median_ms"]

    def share(key: str) -> str:
        if key not in p:
            return "-"
        return f"{p[key]['median_ms']:.1f} ({100 * p[key]['median_ms'] / step:.0f}%)"

    return [
        f"| {name} | {r['size'][0]}x{r['size'][1]} | {r['samples']} | {_ms(r['step'])} | {r['steps_per_s']:.3g} | "
        f"{share('prior')} | {share('encoder')} | {share('generator')} | {share('blend')} | {share('optimiser')} | "
        f"{r['other_ms']:.1f} ({100 * r['other_ms'] / step:.0f}%) | {_f(r.get('peak_rss_mb'), 0)} |"
    ]


def _floor_rows(name: str, r: dict[str, Any]) -> list[str]:
    if not r or "error" in r:
        return [f"| {name} | not measured |"]
    paired = (f"**{r['overhead_pct_paired']:.1f}% ±{r['overhead_pct_paired_mad']:.1f}** ({r['rounds']} rounds)"
              if "overhead_pct_paired" in r else "-")
    return [f"| {name} | {r['step']['median_ms']:.1f} | {r['floor_ms']:.1f} | {r['overhead_ms']:.1f} | "
            f"{r['overhead_pct_of_step']:.1f}% | {paired} | {r['step_over_floor']:.3f} |"]


def write_markdown(res: dict[str, Any]) -> str:
    meta = res.get("meta", {})
    m = meta.get("machine", {})
    out: list[str] = []
    w = out.append
    w("# Benchmarks")
    w("")
    w("Produced by `python benchmarks/run.py` (all sections: `python benchmarks/run.py --big`; a section alone:")
    w("`--only NAME`); the numbers below are the ones in [results.json](results.json). Every section records its own")
    w("command, date and the load average after it ran.")
    w("")
    w(f"- Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory', '?')}; Python {m.get('python', '?')}, "
      f"torch {m.get('torch', '?')}; {m.get('platform', '')}.")
    w(f"- Last run: {meta.get('date', '?')} (`{meta.get('command', '?')}`), torch intra-op threads: {meta.get('threads', 1)}.")
    w("- **Noise.** The machine's 2 cores are shared with other people's tests and a training job (load average 2-6")
    w("  while measuring). Comparisons are interleaved (A B A B ...) in one process; cells show the median and")
    w("  ±MAD (median absolute deviation, % of the median). Treat differences under ~10% between separate rows as noise.")
    w("- One intra-op thread: with 2 threads on these 2 busy cores a step gets up to ~5x slower and far noisier")
    w("  (see the `threads` row of the levers table), so all workers pin `torch.set_num_threads(1)`.")
    w("")

    w("## One distillation step, split (CPU)")
    w("")
    w("A step = G forward, blend, encode (latent priors), noise, one batched U-Net call for cond + uncond of every noise")
    w("sample, SDS gradient, backward through encoder/blend/G, Adam. `step` is the median interval between steps of")
    w("real `distill()` runs; each part is timed alone at the same sizes, interleaved with those runs; `other` is the")
    w("step minus the parts (noise draws, SDS formula, surrogate loss, regulariser, autograd bookkeeping). ms (share of")
    w("the step). Input 512 x 512 everywhere; the working size is the prior's.")
    w("")
    w("| prior | working size | noise samples | step ms | steps/s | prior fwd | encoder fwd+bwd | G fwd+bwd | blend fwd+bwd | Adam | other | peak RSS MiB |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|")
    sd15 = res.get("sd15", {})
    for name, r in (("tiny test SD (tests/tiny_sd.py)", res.get("tiny")), ("built-in (pixel space)", res.get("builtin")),
                    ("SD-1.5-sized, random weights", sd15.get("step") if sd15 and "error" not in sd15 else sd15)):
        if r is not None:
            out.extend(_step_rows(name, r or {}))
    b = res.get("builtin", {})
    if b and "source" in b:
        w("")
        w(f"Built-in prior measured: `{b['source']}`" + (" (the architecture `lasagna train builtin` trains by default, "
          "random weights: its shipped weights were not in the tree when this ran)." if b["source"] == "builtin-random" else "."))
    if sd15 and "step" in sd15:
        w("")
        w(f"SD-1.5-sized: UNet2DConditionModel (320, 640, 1280, 1280), AutoencoderKL (128, 256, 512, 512), CLIPTextModel 768 x 12,"
          f" built from the published configs with random weights (build {sd15.get('build_s', '?')} s). On this CPU a step costs"
          f" minutes, so it ran {sd15['step']['steps_timed']} step(s) with 1 noise sample (batch 2 for the U-Net) and each part once:"
          " single measurements, not medians. The authors' setting (4 samples) multiplies the U-Net part by about 4.")
    w("")

    w("## The floor: step time over the unavoidable work")
    w("")
    w("Floor = the prior's batched forward + (latent priors) the encoder's forward and backward + G's forward and")
    w("backward, each timed alone at the same sizes. Overhead = step - floor. Target: under 10% on CPU for the tiny SD")
    w("model and the built-in prior.")
    w("")
    w("Two estimates of the overhead share: from the medians of all steps and all parts (column 5), and paired per")
    w("round - each round is a short `distill()` run followed at once by the floor parts, so both see the same load -")
    w("as the median over rounds ± MAD (column 6, the one to trust on this busy machine).")
    w("")
    w("| prior | step ms | floor ms | overhead ms | overhead % (medians) | overhead % (paired per round) | step / floor |")
    w("|---|---|---|---|---|---|---|")
    for name, r in (("tiny test SD", res.get("tiny")), ("built-in", res.get("builtin")),
                    ("SD-1.5-sized", sd15.get("step") if sd15 else None)):
        if r is not None:
            out.extend(_floor_rows(name, r or {}))
    w("")
    if sd15 and "step" in sd15:
        w("The SD-1.5-sized parts were each timed once while a step takes about a minute under a load average of 5-7 from")
        w("other processes: single measurements vary by tens of percent (the U-Net part took 35 s in one run and 19 s in")
        w("the next; the overhead estimate moved from -25% to +15%), so its overhead is not resolvable on this machine.")
        w("What the loop adds around the networks is the same code as for the tiny model, whose overhead is resolved above.")
        w("")

    lv = res.get("levers", {})
    if lv and "error" not in lv:
        w("## Levers (tiny test SD, 64 x 64 working size, 4 noise samples, before/after interleaved in one run)")
        w("")
        w("| lever | before ms | after ms | speed-up | kept |")
        w("|---|---|---|---|---|")
        kept = {
            "fused Adam (optimiser step)": "yes (distill.py: `fused=True` on CPU/CUDA)",
            "channels-last generator (G fwd+bwd)": "yes (distill.py, CPU only)",
            "inference_mode for the prior (U-Net call)": "yes (stable_diffusion.py): no autograd bookkeeping at all; 1.0-1.3x across our runs",
            "sds_loss (noise tables once, cached text/hint, inference_mode)": "partly: cached text/hint and inference_mode kept; the noise tables were dropped when every prior came to share one `Prior.sds_loss` (their gain is within the noise)",
            "whole step (all levers)": "-",
        }
        for name, r in lv.items():
            if isinstance(r, dict) and "before" in r:
                w(f"| {name} | {_ms(r['before'])} | {_ms(r['after'])} | {r['speedup']:.2f}x | {kept.get(name, '')} |")
        th = lv.get("threads (step ms at 1 and 2 intra-op threads)", {})
        if th:
            w(f"| threads: whole step at 1 vs 2 intra-op threads (this busy machine) | {_ms(th.get('1'))} | {_ms(th.get('2'))} | "
              f"{(th['1']['median_ms'] / th['2']['median_ms']) if '2' in th else float('nan'):.2f}x | not a code lever: two threads"
              " spin-wait on cores other processes hold (5x to 100x slower across our runs); pin threads on shared machines |")
        tc = lv.get("torch.compile (generator)")
        if tc:
            if "error" in tc:
                w("| torch.compile (G fwd+bwd) | - | - | fails: inductor's replication_pad2d backward stride assertion, channels-last"
                  " and contiguous alike (torch 2.13) | no |")
            else:
                fmt = tc.get("compiled_format", "").replace("torch.", "")
                w(f"| torch.compile (G fwd+bwd, {fmt}; compile {tc['compile_s']} s) vs eager channels-last | {_ms(tc['eager'])} | "
                  f"{_ms(tc['compiled'])} | {tc['speedup']:.2f}x | no: the compile costs more than it saves in a 500-step"
                  " run unless the speed-up is large; inductor's channels-last replicate-pad backward also fails |")
        ch = lv.get("checks", {})
        if ch:
            w("")
            w(f"Checked, already right: U-Net calls per step = {ch['unet_calls_per_step']:.0f} (cond + uncond of all noise samples in"
              f" one batch); text-encoder calls per run = {ch['text_encoder_calls_per_run']} (embeddings once per run); host syncs:"
              f" {ch['host_syncs']}; attention: {', '.join(ch.get('attention_processors', []))} (diffusers' scaled-dot-product"
              " attention, flash kernel on the CPU). Constant per-run work: the text embeddings and control"
              " hint are made once (levers above); G's coordinate grid is rebuilt each step inside generator.py, a few"
              " microseconds at 64 x 64, counted in G's floor.")
        w("")

    enc = sd15.get("encoder") if sd15 else None
    if enc:
        w("## The encoder's cost and the faster gradient paths (SD-1.5-sized VAE, 512 x 512)")
        w("")
        full = enc["fwd_bwd"]["full"]["median_ms"]
        step_ms = sd15["step"]["step"]["median_ms"] if "step" in sd15 else None
        w("| gradient path | encoder fwd+bwd ms | speed-up | SDS grad cosine vs full | encoder VJP cosine vs full |")
        w("|---|---|---|---|---|")
        eff = enc.get("gradient_effect", {})
        labels = {"full": "full VAE encoder (default)", "half": "`--fast-encoder` (half size, latent upsampled 2x)",
                  "tiny-ae": "`--vae TAESD` (AutoencoderTiny, TAESD's architecture)"}
        for name in ("full", "half", "tiny-ae"):
            e = eff.get(name, {})
            w(f"| {labels[name]} | {_ms(enc['fwd_bwd'][name])} | {enc['speedup_vs_full'][name]:.2f}x | "
              f"{_f(e.get('sds_grad_cosine_vs_full'), 3) if e else ('1' if name == 'full' else 'n/a (random weights)')} | "
              f"{_f(e.get('encoder_vjp_cosine_vs_full'), 3) if e else ('1' if name == 'full' else 'n/a')} |")
        if step_ms:
            w("")
            w(f"Encoder share of an SD-1.5-sized step at 1 noise sample: {100 * full / step_ms:.0f}% ({full / 1000:.1f} s of "
              f"{step_ms / 1000:.1f} s); with the authors' 4 samples the U-Net grows ~4x and the encoder's share falls accordingly.")
        w("")
    lm = res.get("lowmem", {})
    if lm and "error" not in lm:
        t = lm["sds_fwd_bwd"]
        w("## `--low-memory`")
        w("")
        w("What it does (SD priors): gradient checkpointing in the VAE encoder (activations recomputed in the backward")
        w("pass instead of stored), VAE slicing (batches encoded one image at a time), the VAE decoder (never used by SDS)")
        w("and the text encoder (run once per run) kept off the GPU, fp16 weights (`--precision auto` is already fp16 on")
        w("CUDA). Attention slicing is deliberately *not* used: PyTorch's scaled-dot-product attention (flash /")
        w("memory-efficient kernels) never materialises the N x N attention matrix, while diffusers' sliced processor does,")
        w("per slice, and is slower.")
        w("")
        w(f"On the CPU with the tiny model: SDS gradient cosine vs the default path = {lm['cosine']}, max |difference| ="
          f" {lm['max_abs_diff']:.2g}; sds_loss forward+backward {_ms(t['default'])} ms by default, {_ms(t['low_memory'])} ms"
          " with --low-memory (the recomputation).")
        v = lm.get("sd15_vae_encoder", {})
        if v and "error" not in v:
            w("")
            w(f"SD-1.5-sized VAE encoder, forward + backward of one 512 x 512 image on the CPU (fp32), peak RSS above rest:"
              f" {v['default']['activation_peak_mb']:.0f} MiB stored activations by default, {v['checkpointed']['activation_peak_mb']:.0f} MiB"
              f" with gradient checkpointing; {v['default']['seconds']} s vs {v['checkpointed']['seconds']} s (single runs);"
              f" gradient cosine {v['gradient_cosine']}. In fp16 on a GPU both halve.")
        w("")

    st = res.get("startup", {})
    if st and "error" not in st:
        w("## Start-up (fresh `lasagna` processes, wall clock)")
        w("")
        w(f"Bare `python -c pass`: {_ms(st['python_baseline'])} ms. Target: under 500 ms, no torch/diffusers/transformers."
          f" Load average when measured: {st.get('load_avg_after', '?')}; wall time on a busy 2-core machine is about CPU time x"
          " (1 + waiting), so the CPU column is the cost that load does not inflate.")
        w("")
        w("| command | wall ms | CPU ms (user+sys) | heavy libraries imported | slowest imports (-X importtime, cumulative ms) |")
        w("|---|---|---|---|---|")
        for name in ("--help", "--version", "templates", "inspect"):
            r = st.get(name)
            if r:
                slow = ", ".join(f"{n} {ms:.0f}" for n, ms in r["slowest_imports"])
                w(f"| `lasagna {name}` | {_ms(r)} | {r.get('cpu_ms', '-')} | {r['heavy_imports'] or 'none'} | {slow} |")
        w("")
        nl = st.get("numpy_lever_templates")
        if nl:
            w(f"Lever, interleaved: `lasagna templates` with numpy imported up front (as before) {_ms(nl['before'])} ms,"
              f" without {_ms(nl['after'])} ms.")
            w("")
        w("Fix kept: `lasagna_core.document` imports numpy on first use and `lasagna_core.layers` only for type")
        w("checking, so `--help`, `--version` and `templates` no longer load numpy (it was about half of their import")
        w("time: `import lasagna_cli.app` went from ~115 ms to ~60 ms of import time in `-X importtime`).")
        w("`inspect` needs psd-tools (which needs numpy) by nature: those two imports are most of its cost.")
        ins = st.get("inspect", {})
        w("Wall time follows the machine's load: in an earlier run at load 4.3 (23:43 UTC) `inspect` took 717 ms wall and")
        w("467 ms of CPU, over the target; its cost is importing psd-tools and numpy, which reading a PSD with psd-tools")
        w("can't avoid.")
        if ins.get("median_ms", 0) > 500:
            w(f"**Not met for `inspect` under this load**: {ins['median_ms']:.0f} ms wall, {ins.get('cpu_ms', '?')} ms of CPU. With the"
              " machine less busy (load ~2, 22:52 UTC) the same command measured 303 ms wall; the remaining cost is importing")
            w("psd-tools and numpy, which reading a PSD with psd-tools can't avoid short of a hand-written header-and-layer-records")
            w("parser for `describe`.")
        w("")

    e2e = res.get("e2e", {})
    if e2e and "error" not in e2e:
        w("## End to end: a whole `lasagna shade` with the tiny model (CPU, 1 thread)")
        w("")
        w("Includes interpreter start, imports, model load, distillation, guided upsampling to the full size, PSD and")
        w("sidecar write. `1 step` isolates the fixed costs; per-step = (long run - 1-step run) / (steps - 1).")
        w("")
        w("| input | steps | wall s | peak RSS MiB |")
        w("|---|---|---|---|")
        for key, r in e2e.items():
            if isinstance(r, dict) and "median_ms" in r:
                n, steps = key.split("_")
                w(f"| {n} | {steps[:-5]} | {r['median_ms'] / 1000:.2f} ±{r['mad_pct']:.0f}% | {r['peak_rss_mb']:.0f} |")
        for n in ("512", "2048"):
            if f"{n}px_per_step_ms" in e2e:
                w(f"| {n}px | per step | {e2e[f'{n}px_per_step_ms']:.1f} ms | |")
        ph = e2e.get("phases", {})
        if ph and "error" not in ph:
            w("")
            w(f"Where the fixed cost goes: importing torch {ph['import_torch_s']} s, torch + diffusers + transformers + Lasagna"
              f" {ph['import_diffusers_transformers_lasagna_s']} s (fresh interpreters, medians of 3); loading the tiny model"
              f" {ph['512px']['load_prior_s']} s; the 1-step edit (read, distil, guided upsampling, PSD + sidecar write)"
              f" {ph['512px']['run_edit_1_step_s']} s at 512 px and {ph['2048px']['run_edit_1_step_s']} s at 2048 px."
              " (single measurements). The imports are the libraries' own and dominate; the rest is interpreter start,"
              " first-use imports of the model classes and the loaded document's guided upsampling and PSD encoding.")
        w("")

    big = res.get("bigdoc", {})
    if big and "error" not in big:
        w("## Big documents: 8192 x 8192 PSD, 10 layers, plus 2 new ones")
        w("")
        d = big.get("document", {})
        w(f"Document: 8-bit RGB, a full-canvas background and 9 layers of 1024-8192 px (smooth, posterised, painting-like"
          f" content), stored merged image; {d.get('bytes', 0) / 1e6:.0f} MB on disk. Each variant runs in its own process"
          " (peak RSS = that process's VmHWM), alone on the machine as far as we control it.")
        w("")
        w("| variant | read s | write s | total s | peak RSS MiB |")
        w("|---|---|---|---|---|")
        labels = {"psd_tools_save": "psd-tools: open + merged image + 2 layers + `save()` (re-composites)",
                  "psd_tools_raw_write": "psd-tools: open + merged image + 2 layers + raw record write (I/O floor)",
                  "lasagna_before": "Lasagna before (save_psd as it was: float32 copies, merged image decoded again, whole-canvas composite)",
                  "lasagna": "Lasagna: `document.load` + `save_psd` (2 new top layers)"}
        for key, label in labels.items():
            r = big.get(key)
            if r and "error" not in r:
                w(f"| {label} | {r['read_s']:.1f} | {r['write_s']:.1f} | {r['total_s']:.1f} | {r['peak_rss_mb']:.0f} |")
            elif r:
                w(f"| {label} | failed: {r['error'][:100]} | | | |")
        for floor in ("psd_tools_save", "psd_tools_raw_write"):
            ratio = big.get(f"ratio_vs_{floor}")
            if ratio:
                w(f"")
                w(f"Lasagna / {floor}: time **{ratio['time']}x**, memory **{ratio['memory']}x**.")
        w("")
        w("psd-tools' own read + `save()` is the floor the target names; Lasagna is well under 1.5x of it in time and")
        w("memory. The bare record write is a lower bound, not a valid output: it leaves the old merged image in the file.")
        w("Against it Lasagna's memory is about the same; its extra time is the work a correct writer must add:")
        w("compositing the two new layers over the stored merged image (torch, one thread, in strips of rows) and")
        w("encoding the new merged image. What changed in `save_psd` (same bytes written, tested): layers are quantised")
        w("to the file's integers before psd-tools sees them (uint8, not three float32 copies); the merged image")
        w("below is the one `load` already decoded, and the new layers are the arrays just written, not decoded back;")
        w("the new layers are blended over it strip by strip with `blend.blend` (no full-canvas copies per layer; a")
        w("transparent merged image or placed layers take the general `blend.composite`, also in strips). Only what")
        w("changed is composited: the stored merged image stands for every original layer. No float64 copy exists on")
        w("this path (psd-tools decodes and encodes in float32; a float64 8192 px RGB copy would be 1.5 GiB of RSS).")
        up = big.get("guided_upsample_8192", {})
        if up and "error" not in up:
            w("")
            w(f"Guided upsampling of two 64 x 64 layers to 8192 x 8192: {up['seconds_two_layers']} s, peak RSS {up['peak_rss_mb']:.0f} MiB"
              f" (of which {up['base_rss_mb']:.0f} MiB is the float32 base itself): the colour guided filter holds"
              " [3, H, W] coefficients and their product with the guide at full size, about 2 GiB at 8192 px per layer."
              " Computing the sum channel by channel would cut that to about 1 GiB; `resample.py` belongs to the"
              " full-resolution work, so this is left as a recommendation.")
        w("")
    if "flats" in res:
        out.extend(flats.markdown(res["flats"]))
    out.extend(gpu_section())
    w("## Not measured here (no GPU was lent to this work)")
    w("")
    w("- Anything on a GPU (`benchmarks/gpu.py` above is ready for it): steps/s, `torch.cuda.max_memory_allocated`, the time of a 500-step SD 1.5 (+ ControlNet) run,")
    w("  and whether `--low-memory` brings SD 1.5 + ControlNet at 512 px under 8 GB. Estimate from the parts, fp16: U-Net")
    w("  1.7 GB + ControlNet 0.7 GB + VAE encoder 0.07 GB of weights (decoder and text encoder moved off), plus activations")
    w("  of the encoder's backward at 512 px (the part gradient checkpointing cuts) and of one batch-8 U-Net forward")
    w("  without autograd: it should fit, but that is arithmetic, not a measurement. The benchmark runs on a GPU as is")
    w("  (the workers take the device from the priors; GPU peak memory would need `torch.cuda.max_memory_allocated` added).")
    w("- bf16/fp16 autocast and fp16 weights: GPU levers, not measured (no GPU; `--precision fp16` is refused on the CPU).")
    w("- The effect of `--fast-encoder` and `--vae` on a real edit: with random weights the gradient comparison is")
    w("  meaningless (cosines ~0 above say only that random encoders disagree). With real weights run")
    w("  `python benchmarks/run.py --only sd15 --sd-model SD15_FOLDER --taesd TAESD_FOLDER`.")
    w("- SD-1.5-sized steps with the authors' 4 noise samples (only 1 sample is affordable on this CPU), and their")
    w("  500-step run time.")
    w("- Early stopping when the layer stops changing: not added. A stop rule changes results silently unless it is")
    w("  opt-in, and with 4 noise samples the SDS loss is too noisy per step to say when a layer stopped changing")
    w("  without a held-out criterion; not worth a guess without GPU-scale runs to calibrate it.")
    w("")
    return "\n".join(out) + "\n"


GPU_RESULTS = Path(__file__).resolve().parent / "gpu-results.json"


def gpu_section() -> list[str]:
    """The GPU section: benchmarks/gpu.py's table when a full-size run has written gpu-results.json, else
    what is not yet measured and the command that measures it."""
    lines = ["## GPU: SD 1.5 + ControlNet, IC-Light fc and SDXL base (`benchmarks/gpu.py`)", ""]
    report = json.loads(GPU_RESULTS.read_text(encoding="utf-8")) if GPU_RESULTS.is_file() else None
    if report and not report.get("tiny"):
        from benchmarks.gpu import table

        lines += [f"Measured on {report['device']}, torch {report['torch']}, {report['date']} (`{report['command']}`):", "",
                  table(report["rows"]).rstrip("\n"), ""]
        return lines
    return lines + [
        "**Not yet measured: no GPU has been lent to this work.** No GPU number in this file or the README is a measurement.",
        "",
        "`python benchmarks/gpu.py` (one command, on a CUDA machine) builds the three priors with random weights of",
        "the published architectures at their native sizes (SD 1.5 U-Net + a ControlNet from it at 512 px; the same",
        "U-Net widened to IC-Light fc's 8 inputs at 512 px; SDXL base's U-Net, VAE and both text encoders at",
        "1024 px), runs the real `distill()` loop with each prior's template (shade-sd, shade-iclight: 4 noise",
        "samples; shade-sdxl: 2) in fp16 and in bf16, and reports steps/s, peak GPU memory",
        "(`torch.cuda.max_memory_allocated`), the parts of the floor each timed alone with device synchronisation",
        "(the prior's batched network call, the encoder's forward + backward, the layer generator's forward +",
        "backward), the encoder's share of a step and the largest gap (the costliest part, or the overhead above the",
        "floor): what to act on first. It writes benchmarks/gpu-results.json, from which this section is rebuilt.",
        "`python benchmarks/gpu.py --tiny --device cpu` runs the same code on the test suite's tiny shapes",
        "(tests/test_gpu_benchmark.py does, so the script stays alive); its numbers are not GPU numbers.",
        "",
    ]
