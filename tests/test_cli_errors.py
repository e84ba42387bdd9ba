"""Every bad input ends the same way: one `tsm-video <cmd>: error: ...` line on stderr, exit code 2, no
traceback (argparse's own errors too), `--debug` re-raises. One table, run in-process through
`tsm_video.cli.main`; the inputs are the issue's list and more."""

from __future__ import annotations

import errno
import json
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from data_tools.synth import make_synthetic_dataset
from eval_crafter.synthetic import synthetic_metadata
from tsm_video.cli import main
from tsm_video.config import ConfigError

# The tiny backbone, a random init and two DDIM steps: every generate case fails before sampling.
GEN = [
    "generate", "--cfg", "demo", "--prompt", "a red square", "--out", "out", "--no-progress",
    "train.stages=[foster,assemble]", "model.checkpoint=null", "generate.steps=2", "generate.num_frames=2",
]  # fmt: skip
TRAIN = ["train", "--cfg", "demo", "--dry-run"]
LIGHT = ["eval", "evalcrafter", "--backend", "light", "--no-progress", "--out", "r.json"]


class _Evil:
    """Unpickling this would run a shell command: a checkpoint must be refused, never run."""

    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "text.ckpt").write_text("not a checkpoint\n")
    (root / "text.safetensors").write_text("not a checkpoint\n")
    save_file({"a": torch.zeros(2)}, root / "wrongkeys.safetensors")
    save_file({"a": torch.zeros(64)}, root / "whole.safetensors")
    (root / "trunc.safetensors").write_bytes((root / "whole.safetensors").read_bytes()[:-40])
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": _Evil()}, root / "evil.ckpt")
    (root / "latin1.txt").write_bytes(b"caf\xe9 au lait\n")
    (root / "empty.txt").write_text("\n\n")
    (root / "afile").write_text("a file, not a folder")
    (root / "bad.yaml").write_text("run: [unclosed\n")
    (root / "notjson.json").write_text("not json")
    (root / "wrong.json").write_text(json.dumps({"a": 1}))
    (root / "empty.csv").write_text("")
    (root / "nocols.csv").write_text("foo,bar\na.mp4,x\n")
    csv = make_synthetic_dataset(root / "synth", num_videos=2, seed=0, size=(32, 32), num_frames=8, fps=8.0)
    shutil.copy(csv, root / "index.csv")
    gt = json.loads((root / "synth" / "ground_truth.json").read_text())
    meta = synthetic_metadata(gt)
    (root / "meta.json").write_text(json.dumps(meta))
    for folder in ("good", "badnames", "emptyv"):
        (root / folder).mkdir()
    for vid, entry in meta.items():
        shutil.copy(root / "synth" / "videos" / entry["video"], root / "good" / f"{vid}.mp4")
        shutil.copy(root / "synth" / "videos" / entry["video"], root / "badnames" / entry["video"])
    return root


# (id, argv, regex the error must match)
CASES = [
    # --- configs and overrides
    ("cfg-missing", ["train", "--cfg", "nosuch.yaml", "--dry-run"], r"config file not found: nosuch\.yaml"),
    ("cfg-bad-yaml", ["train", "--cfg", "bad.yaml", "--dry-run"], r"bad\.yaml: not valid YAML"),
    (
        "override-type",
        [*TRAIN, "train.lr=abc"],
        r"override 'train\.lr=abc': config key `train\.lr`: got 'abc'",
    ),
    (
        "override-unknown-key",
        [*TRAIN, "train.lrr=1"],
        r"override 'train\.lrr=1': unknown .*did you mean 'lr'",
    ),
    ("override-no-equals", [*TRAIN, "trainlr"], r"override 'trainlr': expected key\.sub=value"),
    (
        "override-bad-yaml",
        [*TRAIN, "tsm.scales=[4,"],
        r"override 'tsm\.scales=\[4,': the value is not valid YAML",
    ),
    (
        "override-not-section",
        [*TRAIN, "train.lr.x=1"],
        r"override 'train\.lr\.x=1': `train\.lr` is not a section",
    ),
    (
        "data-height-tiny",
        [*TRAIN, "data.height=40"],
        r"`data\.height`: got 40; must be a multiple of 16 .*try 32",
    ),
    (
        "data-height-vc2",
        ["train", "--cfg", "vc2_openvid70k", "--dry-run", "data.height=328"],
        r"`data\.height`: got 328; must be a multiple of 64 for backbone `vc2`",
    ),
    ("unknown-backbone", [*TRAIN, "model.backbone=vc3"], r"`model\.backbone`: got 'vc3'; valid backbones"),
    (
        "scale-not-configured",
        [*TRAIN, "--stage", "foster", "--scale", "3"],
        r"--scale 3: not one of tsm\.scales",
    ),
    (
        "resume-nosuchdir",
        ["train", "--cfg", "demo", "--stage", "assemble", "--resume", "nosuchdir"],
        r"--resume nosuchdir: not a checkpoint folder",
    ),
    # --- checkpoints (generate loads the base before sampling)
    ("ckpt-text", [*GEN, "model.checkpoint=text.ckpt"], r"text\.ckpt: not a PyTorch checkpoint"),
    (
        "ckpt-text-safetensors",
        [*GEN, "model.checkpoint=text.safetensors"],
        r"text\.safetensors: not a readable safetensors file",
    ),
    (
        "ckpt-truncated",
        [*GEN, "model.checkpoint=trunc.safetensors"],
        r"trunc\.safetensors: not a readable safetensors file",
    ),
    (
        "ckpt-wrong-keys",
        [*GEN, "model.checkpoint=wrongkeys.safetensors"],
        r"checkpoint wrongkeys\.safetensors does not match",
    ),
    (
        "ckpt-unsafe-pickle",
        [*GEN, "model.checkpoint=evil.ckpt"],
        r"evil\.ckpt: refused as unsafe: the pickle imports `print`.*convert it once",
    ),
    (
        "ckpt-missing-tiny",
        [*GEN, "model.checkpoint=missing.ckpt"],
        r"checkpoint not found: missing\.ckpt \(vc2-tiny has no released weights",
    ),
    (
        "ckpt-missing-vc2",
        ["generate", "--cfg", "vc2_openvid70k", "--prompt", "x", "--out", "out"],
        r"checkpoint not found: checkpoints/vc2/model\.ckpt \(the official vc2 weights are published at "
        r"https://huggingface\.co/VideoCrafter/VideoCrafter2",
    ),
    # --- generate flags and files
    ("prompts-not-utf8", [*GEN[:3], "--prompts", "latin1.txt", *GEN[5:]], r"latin1\.txt: not UTF-8 text"),
    (
        "prompts-missing",
        [*GEN[:3], "--prompts", "nosuch.txt", *GEN[5:]],
        r"prompt file not found: nosuch\.txt",
    ),
    ("prompts-empty", [*GEN[:3], "--prompts", "empty.txt", *GEN[5:]], r"empty\.txt: no prompts"),
    ("out-under-a-file", [*GEN, "--out", "afile/sub"], r"Not a directory: afile/sub"),
    (
        "generate-height-override",
        [*GEN, "generate.height=72"],
        r"override 'generate\.height=72': config key `generate\.height`: got 72",
    ),
    ("generate-height-flag", [*GEN, "--height", "72"], r"--height 72: must be a positive multiple of 16"),
    ("generate-steps", [*GEN, "--steps", "0"], r"--steps 0"),
    ("generate-batch-size", [*GEN, "--batch-size", "0"], r"--batch-size 0: must be >= 1"),
    ("generate-shard", [*GEN, "--shard", "3/2"], r"--shard 3/2"),
    ("generate-compare", [*GEN, "--compare", "base"], r"--compare needs at least two variants"),
    ("adapter-missing", [*GEN, "--adapter", "nosuch.safetensors"], r"adapter file not found: nosuch"),
    ("adapter-not-adapter", [*GEN, "--adapter", "wrongkeys.safetensors"], r"not a tsm-video adapter"),
    # --- export
    (
        "export-text",
        [
            "export",
            "vc2-safetensors",
            "--ckpt",
            "text.ckpt",
            "--out",
            "x.safetensors",
            "--backbone",
            "vc2-tiny",
        ],
        r"text\.ckpt: not a PyTorch checkpoint",
    ),
    (
        "export-missing",
        ["export", "vc2-safetensors", "--ckpt", "nosuch.ckpt", "--out", "x.safetensors"],
        r"checkpoint not found: nosuch\.ckpt \(the official vc2 weights are published at https://huggingface",
    ),
    (
        "export-backbone",
        ["export", "vc2-safetensors", "--ckpt", "text.ckpt", "--out", "x.safetensors", "--backbone", "vc3"],
        r"unknown backbone 'vc3'; valid: .*vc2",
    ),
    (
        "export-unsafe",
        [
            "export",
            "vc2-safetensors",
            "--ckpt",
            "evil.ckpt",
            "--out",
            "x.safetensors",
            "--backbone",
            "vc2-tiny",
        ],
        r"evil\.ckpt: refused as unsafe",
    ),
    (
        "export-lora-missing",
        ["export", "lora", "--adapter", "nosuch.safetensors", "--out", "lora"],
        r"adapter file not found: nosuch",
    ),
    # --- eval
    (
        "eval-no-models",
        ["eval", "evalcrafter", "--videos", "good", "--out", "r.json"],
        r"the full backend needs --models DIR",
    ),
    ("eval-no-videos-folder", [*LIGHT, "--videos", "nosuch"], r"videos folder nosuch does not exist"),
    ("eval-empty-videos", [*LIGHT, "--videos", "emptyv"], r"no videos in emptyv"),
    (
        "eval-bad-names",
        [*LIGHT, "--videos", "badnames"],
        r"2 video\(s\) in badnames are not named by a prompt id",
    ),
    (
        "eval-bad-names-skipped",
        [*LIGHT, "--videos", "badnames", "--skip-unknown"],
        r"none of the 2 video\(s\) in badnames is named by a prompt id",
    ),
    (
        "eval-unknown-metric",
        [*LIGHT, "--videos", "good", "--prompts", "meta.json", "--metrics", "foo"],
        r"unknown light metric 'foo'; available",
    ),
    (
        "eval-prompts-not-json",
        [*LIGHT, "--videos", "good", "--prompts", "notjson.json"],
        r"notjson\.json: not JSON",
    ),
    (
        "eval-prompts-wrong",
        [*LIGHT, "--videos", "good", "--prompts", "wrong.json"],
        r"wrong\.json: entry 'a' needs a string 'prompt'",
    ),
    (
        "compare-missing",
        ["eval", "compare", "nosuch.json", "wrong.json"],
        r"No such file or directory: nosuch\.json",
    ),
    (
        "compare-not-json",
        ["eval", "compare", "notjson.json", "wrong.json"],
        r"notjson\.json: not a JSON report",
    ),
    (
        "compare-wrong-json",
        ["eval", "compare", "wrong.json", "wrong.json"],
        r"wrong\.json: not a report of `tsm-video eval evalcrafter`",
    ),
    (
        "synth-metadata-wrong",
        ["eval", "synth-metadata", "--ground-truth", "wrong.json", "--out", "m.json"],
        r"ground truth: expected the object of ground_truth\.json",
    ),
    # --- data
    (
        "subset-missing-csv",
        ["data", "subset", "--csv", "nosuch.csv", "--out", "s.csv"],
        r"index file nosuch\.csv does not exist",
    ),
    ("subset-empty-csv", ["data", "subset", "--csv", "empty.csv", "--out", "s.csv"], r"empty\.csv is empty"),
    (
        "subset-unknown-column",
        ["data", "subset", "--csv", "index.csv", "--out", "s.csv", "--min", "nosuch=3"],
        r"index\.csv has no column 'nosuch'",
    ),
    (
        "probe-missing-csv",
        ["data", "probe", "--csv", "nosuch.csv", "--out", "probe"],
        r"index file nosuch\.csv does not exist",
    ),
    (
        "probe-missing-columns",
        ["data", "probe", "--csv", "nocols.csv", "--out", "probe"],
        r"nocols\.csv has no column 'video' or 'caption'",
    ),
    # --- argparse (exit 2 from the parser itself)
    (
        "argparse-min-not-number",
        ["data", "subset", "--csv", "index.csv", "--out", "s.csv", "--min", "seconds=abc"],
        r"argument --min: 'seconds=abc': 'abc' is not a number",
    ),
    (
        "argparse-min-no-equals",
        ["data", "subset", "--csv", "index.csv", "--out", "s.csv", "--min", "seconds"],
        r"argument --min: 'seconds' must look like 'COLUMN=VALUE'",
    ),
    (
        "argparse-synth-height",
        ["data", "synth", "--out", "s", "--height", "-8"],
        r"argument --height: -8 must be > 0",
    ),
    (
        "argparse-synth-count",
        ["data", "synth", "--out", "s", "--num-videos", "0"],
        r"argument --num-videos: 0 must be > 0",
    ),
    ("argparse-missing-cfg", ["train", "--dry-run"], r"the following arguments are required: --cfg"),
    ("argparse-unknown-flag", [*TRAIN, "--bogus"], r"unrecognized arguments: --bogus"),
    ("argparse-unknown-command", ["nosuch"], r"invalid choice: 'nosuch'"),
]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse errors
        code = stop.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(argv, message, workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    code, err = _run(argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    first = next(line for line in err.splitlines() if ": error: " in line)
    assert re.match(r"tsm-video( [a-z0-9-]+)*: error: ", first), first
    assert re.search(message, err), err
    assert not (workspace / "out" / "generate.json").exists()  # a failed generate records nothing


def test_table_covers_at_least_40_inputs():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


def test_unsafe_pickle_is_never_unpickled(workspace, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append(a))  # torch must not fall back to it
    monkeypatch.chdir(workspace)
    code, err = _run([*GEN, "model.checkpoint=evil.ckpt"], capsys)
    assert code == 2 and "this must never run" not in capsys.readouterr().out and not calls


def test_read_only_output_is_one_line(workspace, monkeypatch, capsys):
    # Root ignores permission bits, so the OS's answer for a read-only folder is simulated.
    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.chdir(workspace)
    monkeypatch.setattr(Path, "mkdir", refuse)
    code, err = _run(["data", "synth", "--out", "ro/synth", "--num-videos", "1"], capsys)
    assert code == 2 and "Traceback" not in err
    assert re.search(r"tsm-video data synth: error: Permission denied: ro/synth", err), err


def test_debug_shows_the_traceback(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    with pytest.raises(ConfigError, match="train.lr"):
        main([*TRAIN, "--debug", "train.lr=abc"])
    with pytest.raises(ConfigError, match="train.lr"):
        main(["--debug", *TRAIN, "train.lr=abc"])


def test_bug_keeps_its_traceback(monkeypatch):
    import tsm_video.cli.train as train_cmd

    def broken(args):
        raise ZeroDivisionError("a bug, not a bad input")

    monkeypatch.setattr(train_cmd, "_train", broken)
    with pytest.raises(ZeroDivisionError):
        main(["train", "--cfg", "demo"])


def test_overrides_anywhere_on_the_line(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    argv = [
        "train",
        "--cfg",
        "demo",
        "--dry-run",
        "train.lr=1e-4",
        "--stage",
        "foster",
        "train.steps.foster=10",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^ +(\S+) +(\S+) +(\d+) steps .* lr ([0-9.e-]+);", out, re.M)
    assert rows and all(kind == "foster" for _, kind, _, _ in rows), out  # --stage foster applies
    assert all((steps, lr) == ("10", "0.0001") for _, _, steps, lr in rows), out  # both overrides apply


def test_csv_with_a_byte_order_mark(workspace, monkeypatch, capsys):
    # Excel's "CSV UTF-8" starts with a BOM: probe and subset both read `video` as `video`.
    from tsm_video.data.index import read_index

    monkeypatch.chdir(workspace)
    Path("bom.csv").write_bytes(b"\xef\xbb\xbf" + Path("index.csv").read_bytes())
    assert [r.caption for r in read_index("bom.csv", "synth/videos")] == [
        r.caption for r in read_index("index.csv", "synth/videos")
    ]
    assert main(["data", "subset", "--csv", "bom.csv", "--out", "bom_subset.csv", "-n", "1"]) == 0
    assert Path("bom_subset.csv").read_bytes().startswith(b"video,caption")  # the BOM is not kept
    capsys.readouterr()
