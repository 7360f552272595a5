"""The measured numbers of docs/experiments.md and docs/sweeps.md, regenerated from runs.

    python scripts/claims.py                      # run the presets, print every block
    python scripts/claims.py --write docs/*.md    # ... and put each block into the docs
    python scripts/claims.py --check docs/*.md    # exit 1 where a doc's numbers differ

A block is the text between `<!-- claims:NAME -->` and `<!-- /claims:NAME -->` in a doc; each
NAME below runs its preset through the `ntklab` command (shortened where `SHORTENED` says so)
into a temporary folder and formats what the runs logged. `--check` compares the numbers one
by one, within two units of the last printed digit or 0.2%: CPUs differ in the last bits of
a float32 run, and a stale number differs by more. Tests rerun `--check` (tests/test_claims.py).
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ntklab.report import fit_line
from ntklab.rundir import RunFolder
from ntklab.stats import local_slopes, loglog_fit
from ntklab.sweep import Job, Sweep, fits, read_sweep

# What each block runs, beyond the preset: the command line's extra arguments.
SHORTENED = {
    "pl_linear": [],
    "width_sweep": [],
    "sgd_floor": [],
    "lazy_vs_rich": [],
    "seeds": [],
}


def ntklab(*args: str) -> None:
    """One `ntklab` command, as a user types it; its failure stops the script."""
    cmd = [sys.executable, "-m", "ntklab", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(
            f"claims: {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr}"
        )


def run(folder: Path, *overrides: str) -> list[dict]:
    ntklab(*overrides, f"hydra.run.dir={folder}")
    return RunFolder(folder).records()


def sweep(folder: Path, *overrides: str) -> Sweep:
    ntklab("-m", *overrides, f"hydra.sweep.dir={folder}")
    result = read_sweep(folder)
    bad = [job.name for job in result.jobs if not job.completed]
    if bad:
        raise SystemExit(f"claims: jobs of {folder} did not complete: {bad}")
    return result


def e(x: float) -> str:
    """A number in the docs' exponent form, e.g. 1.0e-22."""
    return f"{x:.1e}"


def g(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}"


def num(x: float) -> str:
    """Four significant digits, in exponent form when small."""
    return f"{x:.4g}" if 1e-3 <= abs(x) < 1e4 else e(x)


def job_by(result: Sweep, **values: object) -> Job:
    """The job whose overrides hold these values (keys with dots spelled with __)."""
    want = {k.replace("__", "."): v for k, v in values.items()}
    (job,) = [j for j in result.jobs if all(j.overrides.get(k) == v for k, v in want.items())]
    return job


def _to_error(x: float, err: float) -> str:
    """x printed to the first decimal its error reaches (the digits after it are noise)."""
    return f"{x:.{max(0, 1 - math.floor(math.log10(err)))}f}"


# --- pl_linear -------------------------------------------------------------------------------


def pl_linear(tmp: Path) -> str:
    rows = run(tmp / "pl_linear", "experiment=pl_linear", *SHORTENED["pl_linear"])
    kappa = rows[0]["ntk/condition_number"]
    limit = (1 - 1 / kappa) ** 2
    steps = rows[1:]
    resolved = [r for r in steps if r["loss/contraction_resolved"] == 1.0]
    moved = sum(r["ntk/rel_change"] != 0.0 for r in rows)
    above_mu = sum(r["pl/ratio"] >= r["pl/mu"] for r in rows)
    middle = rows[len(rows) // 2]
    gap = (middle["pl/ratio"] - middle["pl/mu"]) / middle["pl/mu"]
    worst = max(r["loss/contraction"] / r["pl/rate_bound"] for r in resolved)
    # the notes' constant is crossed where the contraction exceeds it by more than its error
    crossed = [
        r["step"]
        for r in resolved
        if r["loss/contraction"] - r["loss/contraction_err"] > r["pl/rate_slide"]
    ]
    above_limit = [r for r in resolved if r["loss/contraction"] > limit]
    within_err = all(
        r["loss/contraction"] - limit <= r["loss/contraction_err"] for r in above_limit
    )
    last = resolved[-1]
    err = last["loss/contraction_err"]
    lines = [
        f"Measured ({len(steps)} steps, float64): κ = {kappa:.3f}; `ntk/rel_change` ≠ 0 at"
        f" {moved} of {len(rows)} records; `pl/ratio` ≥ `pl/mu` at {above_mu} of {len(rows)},"
        " the gap closing as the residual turns towards K's bottom eigenvector"
        f" ((pl/ratio − pl/mu)/pl/mu = {e(gap)} at step {middle['step']}).",
        f"`loss/contraction` rises from {steps[0]['loss/contraction']:.2f} at step 1 towards the"
        f" slowest mode's rate (1 − 1/κ)² = {limit:.7f}, between `pl/rate_slide`"
        f" ({last['pl/rate_slide']:.4f}) and `pl/rate_bound` ({last['pl/rate_bound']:.4f});"
        f" its largest ratio to the bound is {worst:.4f}.",
        f"The contraction is resolved (`loss/contraction_resolved` = 1) at {len(resolved)} of"
        f" {len(steps)} steps. It exceeds the notes' constant by more than its round-off error"
        f" at {len(crossed)} steps, from step {crossed[0]} to step {crossed[-1]}.",
        f"At step {last['step']} it is {_to_error(last['loss/contraction'], err)} ±"
        f" {e(err)} (`loss/contraction_err`) against the exact"
        f" {limit:.7f}, with the loss at {e(last['loss/train'])} and its round-off floor"
        f" at {e(last['loss/roundoff_floor'])}.",
    ]
    if above_limit:
        lines.append(
            f"From step {above_limit[0]['step']} the logged contraction is above"
            f" (1 − 1/κ)², which exact arithmetic never allows: "
            + (
                "always by less than its round-off error, so this is round-off, not a rate."
                if within_err
                else "BY MORE THAN ITS ROUND-OFF ERROR."
            )
        )
    return "\n".join(lines)


# --- width_sweep -----------------------------------------------------------------------------

WIDTH_COLUMNS = [
    ("λ_min(K_0)", "ntk/lambda_min", "first", 3),
    ("‖K_0 − K∞‖/‖K∞‖", "ntk/dist_to_inf", "first", 2),
    ("final loss", "loss/train", "last", 0),
    ("max_neuron_dist", "weights/max_neuron_dist", "last", 3),
    ("rel_change", "ntk/rel_change", "last", 3),
    ("rel_dist_from_init", "weights/rel_dist_from_init", "last", 3),
    ("pattern_change", "activations/pattern_change", "last", 2),
]


def _cell(value: float | None, digits: int) -> str:
    if value is None:
        return "–"
    return e(value) if digits == 0 else g(value, digits)


def _table(result: Sweep, key: str, columns: list[tuple[str, str, str, int]]) -> list[str]:
    head = [key.split(".")[-1], *(name for name, *_ in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + " ---: |" * len(head)]
    for job in sorted(result.jobs, key=lambda j: j.overrides[key]):
        cells = [_cell(job.value(tag, which), d) for _, tag, which, d in columns]
        lines.append(f"| {job.overrides[key]:g} | " + " | ".join(cells) + " |")
    return lines


def _fits(
    result: Sweep, tags: list[str], key: str, *, above: float | None = None, which: str = "last"
) -> list[str]:
    """Further fits in the report's format: the tags' last values (or first: `which`),
    over the runs with `key` ≥ `above` where given."""
    out = []
    for tag in tags:
        done = sorted(result.jobs, key=lambda j: j.overrides[key])
        if above is not None:
            done = [j for j in done if j.overrides[key] >= above]
        xs = [float(j.overrides[key]) for j in done]
        fit = loglog_fit(xs, [j.value(tag, which) for j in done])
        label = "all runs" if above is None else f"{key} ≥ {above:g}"
        label += ", at step 0" if which == "first" else ""
        out.append(f"- `{fit_line(tag, key, label, fit)}`")
    return out


def width_sweep(tmp: Path) -> str:
    result = sweep(tmp / "width_sweep", "experiment=width_sweep", *SHORTENED["width_sweep"])
    jobs = sorted(result.jobs, key=lambda j: j.overrides["model.width"])
    inf = jobs[0].value("ntk/lambda_min_inf", "first")
    lines = _table(result, "model.width", WIDTH_COLUMNS)
    lines += ["", f"λ_min(K∞) = {g(inf)} (`ntk/lambda_min_inf`, the same for every width).", ""]
    lines.append("Fitted exponents (the sweep report's lines, 95% intervals):")
    lines.append("")
    lines += [
        f"- `{fit_line(tag, result.x, label, fit)}`"
        for tag, label, fit in fits(result, result.spec.fit)
    ]
    lines += _fits(result, ["ntk/dist_to_inf"], "model.width", which="first")
    lines += _fits(
        result, ["weights/rel_dist_from_init", "activations/pattern_change"], "model.width"
    )
    rel = [(float(j.overrides["model.width"]), j.value("ntk/rel_change", "last")) for j in jobs]
    slopes = local_slopes([x for x, _ in rel], [y for _, y in rel])
    lines += [
        "",
        "Local slopes of `ntk/rel_change` between neighbouring widths: "
        + ", ".join(f"{a:g}→{b:g}: {s:.2f}" for a, b, s in slopes)
        + ".",
    ]
    mins = []
    for job in jobs:
        _, values = job.curve("ntk/lambda_min")
        mins.append((job.overrides["model.width"], min(values)))
    kept = [m for m, v in mins if v > inf / 2]
    lines += [
        "",
        f"Smallest λ_min(K_t) over each run (against λ_min(K∞)/2 = {g(inf / 2)}): "
        + ", ".join(f"m = {m}: {g(v)}" for m, v in mins)
        + f". It stays above λ_min(K∞)/2 for m ∈ {{{', '.join(str(m) for m in kept)}}}.",
    ]
    return "\n".join(lines)


# --- sgd_floor -------------------------------------------------------------------------------


def _floor(job: Job, last: int = 25) -> float:
    _, values = job.curve("loss/train")
    tail = values[-last:]
    return sum(tail) / len(tail)


def _rate(job: Job, a: int, b: int) -> float:
    """The mean contraction per epoch of the loss from epoch a to epoch b."""
    steps, values = job.curve("loss/train")
    at = dict(zip(steps, values, strict=True))
    return (at[b] / at[a]) ** (1 / (b - a))


def sgd_floor(tmp: Path) -> str:
    result = sweep(tmp / "sgd_floor", "experiment=sgd_floor", *SHORTENED["sgd_floor"])
    head = (
        "| d | noise | L* | constant: floor (excess over L*) | plateau: floor (excess), final lr |"
    )
    lines = [head, "| ---: | ---: | ---: | ---: | ---: |"]
    for d in (8, 512):
        for noise in (0.5, 0.0):
            const = job_by(result, data__d=d, data__noise=noise, optim__schedule="constant")
            plat = job_by(result, data__d=d, data__noise=noise, optim__schedule="plateau")
            opt = const.value("loss/optimum", "last")
            cf, pf = _floor(const), _floor(plat)
            lr = plat.value("optim/lr", "last")
            if const.value("loss/optimum_resolved", "last") == 0.0:
                # the data are fitted exactly: L* = 0, and the solve returns round-off
                optimum, opt = "0 (round-off)", 0.0
            else:
                optimum = num(opt)
            lines.append(
                f"| {d} | {noise:g} | {optimum} | {num(cf)} ({e(cf - opt)}) |"
                f" {num(pf)} ({e(pf - opt)}), {e(lr)} |"
            )
    wide = [
        job_by(result, data__d=512, data__noise=noise, optim__schedule="constant")
        for noise in (0.0, 0.5)
    ]
    rates = [(_rate(j, 10, 50), _rate(j, 50, 100)) for j in wide]
    losses = [[j.value("loss/train", "last")] for j in wide]
    lines += [
        "",
        "At d = 512 (constant step) the loss per epoch contracts on average by"
        f" {rates[0][0]:.3f} over epochs 10–50 and {rates[0][1]:.3f} over epochs 50–100 without"
        f" label noise ({rates[1][0]:.3f} and {rates[1][1]:.3f} with it); the final losses are"
        f" {e(losses[0][0])} and {e(losses[1][0])}.",
    ]
    return "\n".join(lines)


# --- lazy_vs_rich ----------------------------------------------------------------------------

LAZY_COLUMNS = [
    ("final loss", "loss/train", "last", 0),
    ("kernel_distance", "ntk/kernel_distance", "last", 2),
    ("rel_change", "ntk/rel_change", "last", 3),
    ("rel_dist_from_init", "weights/rel_dist_from_init", "last", 3),
    ("pattern_change", "activations/pattern_change", "last", 2),
]


def lazy_vs_rich(tmp: Path) -> str:
    result = sweep(tmp / "lazy_vs_rich", "experiment=lazy_vs_rich", *SHORTENED["lazy_vs_rich"])
    lines = _table(result, "model.alpha", LAZY_COLUMNS)
    align = []
    for job in sorted(result.jobs, key=lambda j: j.overrides["model.alpha"]):
        first, last = job.value("ntk/alignment", "first"), job.value("ntk/alignment", "last")
        align.append(f"α = {job.overrides['model.alpha']:g}: {first:.4f} → {last:.4f}")
    lines += ["", "Kernel–target alignment (start → end): " + "; ".join(align) + ".", ""]
    lines.append("Fitted exponents against α (the sweep report's lines, 95% intervals):")
    lines.append("")
    lines += [
        f"- `{fit_line(tag, result.x, label, fit)}`"
        for tag, label, fit in fits(result, result.spec.fit)
    ]
    lines += _fits(
        result, ["ntk/kernel_distance", "weights/rel_dist_from_init"], "model.alpha", above=1
    )
    return "\n".join(lines)


# --- seeds (docs/sweeps.md) ------------------------------------------------------------------


def seeds(tmp: Path) -> str:
    """What `ntklab-report` prints for the sweep of docs/sweeps.md, in its folder's name there."""
    folder = tmp / "widths"
    sweep(folder, "model.width=64,256,1024,4096", "seed=0,1,2", *SHORTENED["seeds"])
    proc = subprocess.run(
        [sys.executable, "-m", "ntklab.report", str(folder)],
        capture_output=True,
        text=True,
        check=True,
    )
    return "```\n" + proc.stdout.replace(str(folder), "runs/multirun/widths").rstrip() + "\n```"


BLOCKS: dict[str, Callable[[Path], str]] = {
    "pl_linear": pl_linear,
    "width_sweep": width_sweep,
    "sgd_floor": sgd_floor,
    "lazy_vs_rich": lazy_vs_rich,
    "seeds": seeds,
}

# --- the docs --------------------------------------------------------------------------------

_BLOCK = re.compile(r"(<!-- claims:(\w+) -->\n)(.*?)(<!-- /claims:\2 -->)", re.S)
_NUMBER = re.compile(r"[−-]?\d+(?:\.\d+)?(?:e[−+-]?\d+)?")


def blocks_in(text: str) -> dict[str, str]:
    return {m.group(2): m.group(3).rstrip("\n") for m in _BLOCK.finditer(text)}


def replace_blocks(text: str, new: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        body = new.get(m.group(2))
        return m.group(0) if body is None else f"{m.group(1)}{body}\n{m.group(4)}"

    return _BLOCK.sub(sub, text)


def _value(token: str) -> tuple[float, float]:
    """The number a token prints and one unit of its last printed digit."""
    plain = token.replace("−", "-")
    mantissa, _, exponent = plain.partition("e")
    decimals = len(mantissa.partition(".")[2])
    unit = 10.0 ** (-decimals + (int(exponent) if exponent else 0))
    return float(plain), unit


def differences(doc: str, fresh: str) -> list[str]:
    """Where the numbers of `doc` differ from `fresh` beyond the tolerance, or the words do."""
    if _NUMBER.sub("#", doc) != _NUMBER.sub("#", fresh):
        return ["the text around the numbers differs:\n--- doc\n" + doc + "\n--- now\n" + fresh]
    out = []
    for old, new in zip(_NUMBER.findall(doc), _NUMBER.findall(fresh), strict=True):
        (a, unit), (b, _) = _value(old), _value(new)
        if not math.isclose(a, b, rel_tol=2e-3, abs_tol=2 * unit):
            out.append(f"{old} in the doc, {new} now")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", nargs="*", default=[], metavar="DOC")
    parser.add_argument("--check", nargs="*", default=[], metavar="DOC")
    parser.add_argument("--only", nargs="*", choices=sorted(BLOCKS), help="run these blocks only")
    args = parser.parse_args(argv)
    docs = [Path(p) for p in args.write + args.check]
    wanted = set(args.only or BLOCKS)
    if docs:
        wanted &= {name for p in docs for name in blocks_in(p.read_text(encoding="utf-8"))}
    with tempfile.TemporaryDirectory(prefix="ntklab-claims-") as tmp:
        fresh = {name: BLOCKS[name](Path(tmp)) for name in BLOCKS if name in wanted}
    if not docs:
        for name, body in fresh.items():
            print(f"<!-- claims:{name} -->\n{body}\n<!-- /claims:{name} -->\n")
        return 0
    failed = False
    for path in docs:
        text = path.read_text(encoding="utf-8")
        if str(path) in args.write:
            path.write_text(replace_blocks(text, fresh), encoding="utf-8")
            print(f"claims: wrote {', '.join(n for n in blocks_in(text) if n in fresh)} in {path}")
            continue
        for name, body in blocks_in(text).items():
            if name not in fresh:
                continue
            diffs = differences(body, fresh[name])
            for line in diffs:
                print(f"claims: {path}, block {name}: {line}", file=sys.stderr)
            failed |= bool(diffs)
    if failed:
        print(
            "claims: the docs are stale; run `python scripts/claims.py --write` on them",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
