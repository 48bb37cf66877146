"""A template's values and the command line's overrides are checked by the same rules, and every refusal
names the key and the bad value in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_core.errors import UsageError
from lasagna_core.edit import edit_settings
from lasagna_core.templates import load_template, parse_template
from tests.conftest import gradient_rgb, to_uint8

LAYER = '[[layers]]\nname = "a"\nblend_mode = "multiply"\nneutral = 1.0\n'


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1"})
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    "text,message",
    [
        (f'name = "x"\n{LAYER}[defaults]\nguidance = -5\n', "[defaults] guidance must be at least 0, not -5"),
        (f'name = "x"\n{LAYER}[defaults]\nsteps = "many"\n', "[defaults] steps must be a whole number, not 'many'"),
        (f'name = "x"\n{LAYER}[defaults]\nsteps = 2.5\n', "[defaults] steps must be a whole number, not 2.5"),
        (f'name = "x"\n{LAYER}[defaults]\nnoise_samples = true\n', "[defaults] noise_samples must be a whole number, not True"),
        (f'name = "x"\n{LAYER}[defaults]\nlearning_rate = 0\n', "[defaults] learning_rate must be above 0, not 0"),
        (f'name = "x"\n{LAYER}[defaults]\nlearning_rate = inf\n', "[defaults] learning_rate must be a finite number, not inf"),
        (f'name = "x"\n{LAYER}[defaults]\nt_max = 1.5\n', "[defaults] t_max must be above 0 and at most 1, not 1.5"),
        (f'name = "x"\n{LAYER}[defaults]\nt_min = 0.6\nt_max = 0.5\n', "[defaults] t_min (0.6) must be below [defaults] t_max (0.5)"),
        (f'name = "x"\nprompt = "{{prompt}}, {{oops}}"\n{LAYER}', "'prompt' has the placeholder {oops}, but only {prompt} is filled in"),
        (f'name = "x"\nnegative_prompt = "ugly {{prompt}}"\n{LAYER}', "'negative_prompt' has the placeholder {prompt}, but nothing"),
        (f'name = "x"\n{LAYER}channels = "3"\n', "layer 'a': channels must be a whole number, not '3'"),
        (f'name = "x"\n{LAYER}alpha = "no"\n', "layer 'a': alpha must be true or false, not 'no'"),
        (f'name = "x"\n{LAYER}range = 5\n', "layer 'a': range must be two numbers [low, high], not 5"),
        (f'name = "x"\n{LAYER}opacity = "half"\n', "layer 'a': opacity must be a number, not 'half'"),
        ('name = "x"\n[[layers]]\nname = "a"\nblend_mode = "multiply"\n', "layer 'a' needs 'neutral'"),
        (LAYER, "the template needs 'name'"),
        ('name = "x"\nlayers = [1]\n', "'layers' must be [[layers]] tables"),
        (f'name = "x"\ndefaults = 3\n{LAYER}', "'defaults' must be a [defaults] table"),
        (f'name = "x"\n{LAYER}[generator]\nsample_steps = -1\n', "[generator] sample_steps must be at least 0, not -1"),
        (f'name = "x"\n{LAYER}[generator]\nsample_steps = 30\n', '[generator] sample_steps needs a finish = "flats" layer'),
    ],
)
def test_bad_values_name_the_key_and_the_value(text: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_template(text, "my.toml")
    assert str(caught.value).startswith(f"my.toml: {message}"), caught.value


def test_good_values_are_kept() -> None:
    spec = parse_template(f'name = "x"\nprompt = "{{prompt}}, {{ braces }} stay"\n{LAYER}[defaults]\nsteps = 7\n'
                          "guidance = 0\nlearning_rate = 1e-3\n", "my.toml")
    assert (spec.defaults.steps, spec.defaults.guidance, spec.defaults.learning_rate) == (7, 0.0, 1e-3)
    assert spec.render_prompt("neon") == "neon, { braces } stay"


def test_command_line_overrides_follow_the_template_rules() -> None:
    spec = load_template("shade")
    assert edit_settings(spec, steps=3, guidance=0.0).steps == 3
    for steps, guidance, message in [(0, None, "--steps must be at least 1, not 0"),
                                     (None, -5.0, "--guidance must be at least 0, not -5.0"),
                                     (None, float("nan"), "--guidance must be a finite number, not nan")]:
        with pytest.raises(UsageError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
            edit_settings(spec, steps=steps, guidance=guidance)


def test_cli_refuses_bad_templates_and_sizes_in_one_line(tmp_path: Path) -> None:
    picture = tmp_path / "a.png"
    Image.fromarray(to_uint8(gradient_rgb(24, 32))).save(picture)
    (tmp_path / "neg.toml").write_text(f'name = "neg"\n{LAYER}[defaults]\nguidance = -5\n')
    (tmp_path / "folder.toml").mkdir()
    cases = [
        (["-t", str(tmp_path / "neg.toml")], 2, "neg.toml: [defaults] guidance must be at least 0, not -5"),
        (["-t", str(tmp_path)], 2, f"template {tmp_path} is a folder, not a .toml file"),
        (["-t", str(tmp_path / "folder.toml")], 2, "folder.toml is a folder, not a .toml file"),
        (["--max-pixels", "100"], 1, "a.png: 32x24 is 768 pixels, above the limit of 100 pixels; pass --max-pixels 768"),
    ]
    for args, code, message in cases:
        exit_code, out, err = cli("shade", str(picture), "-p", "light from the left", "-m", str(tmp_path / "none"),
                                  "-o", str(tmp_path / "out.psd"), *args)
        lines = err.strip().splitlines()
        assert exit_code == code and len(lines) == 1 and message in lines[0], (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "folder.toml", "neg.toml"]


def test_megapixels_are_used_only_where_they_tell_the_sizes_apart() -> None:
    from lasagna_core.document import check_pixel_limit
    from lasagna_core.errors import ImageTooLargeError

    with pytest.raises(ImageTooLargeError, match=r"is 151\.2 megapixels, above the limit of 150 megapixels"):
        check_pixel_limit(Path("big.psd"), 12_300, 12_296, 150_000_000)
    with pytest.raises(ImageTooLargeError, match=r"is 150,000,001 pixels, above the limit of 150,000,000 pixels"):
        check_pixel_limit(Path("big.psd"), 150_000_001, 1, 150_000_000)
