"""Bad input gives one clear message naming the key (and the fix): every case of the table
in-process, through Hydra's compose API and the same steps `ntklab` takes (config.load, then the
run's assembly); a few cases through the real CLI for its exit statuses and its silence on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import HydraException

from ntklab.cli import BAD_INPUT, one_line
from ntklab.config import load
from ntklab.experiment import run_experiment

from conftest import compose_config, run_cli

FAST = ["epochs=2", "model.width=8"]
MLP = ["model=mlp"]
TARGET = "model._target_"
CUSTOM = ["model=custom"]
DATA = ["data=custom"]
LABELS = [*DATA, "data._target_=own_modules.labels"]  # 12 points in R³, 3 classes
OWN = [*CUSTOM, f"{TARGET}=own_modules.ThreeOutputs", "loss=cross_entropy", *LABELS]

# CSV files written into the test's folder; "{dir}" in an override is that folder.
CSV = {
    "empty.csv": "",
    "header_only.csv": "x1,x2,y\n",
    "ragged.csv": "1,2,3\n4,5\n",
    "text.csv": "x,y\n1,2\n3,abc\n",
    "nan.csv": "1,2,3\n4,nan,6\n",
    "inf.csv": "1,2,3\n4,5,inf\n",
    "one_column.csv": "y\n1\n2\n",
    "huge.csv": "1e39,1\n2,3\n",
    "good.csv": "1,2,3\n4,5,6\n",
    "two_columns.csv": "1,2\n3,4\n",
    "binary.csv": b"\xff\xfe\x00\x01\x80",
}

# (id, overrides, what the message must contain, exit status: 2 ours, 1 Hydra's own).
CASES = [
    ("width_zero", ["model.width=0"], "model.width=0: must be a positive integer", 2),
    ("width_not_int", ["model.width=abc"], "full_key: model.width", 1),
    ("slope_one", ["model.negative_slope=1.0"], "model.negative_slope=1.0: must lie in [0, 1)", 2),
    ("lr_zero", ["optim.lr=0"], "optim.lr=0: must be a positive finite number or 'auto'", 2),
    ("lr_nan", ["optim.lr=nan"], "optim.lr=nan", 2),
    ("lr_text", ["optim.lr=fast"], "optim.lr='fast': must be a positive number or 'auto'", 2),
    ("lr_bool", ["optim.lr=true"], "optim.lr=True", 2),
    ("batch_zero", ["optim=sgd", "optim.batch_size=0"], "optim.batch_size=0", 2),
    ("batch_over_n", ["optim=sgd", "data.n=16", "optim.batch_size=17"], "=17: exceeds", 2),
    ("momentum_one", ["optim.momentum=1.0"], "optim.momentum=1.0: must lie in [0, 1)", 2),
    ("unknown_model", ["model=resnet"], "Could not find 'model/resnet'", 1),
    ("unknown_ntk_method", ["ntk.method=magic"], "ntk.method='magic': unknown; choose", 2),
    ("n_zero", ["data.n=0"], "data.n=0: must be a positive integer", 2),
    ("d_zero", ["data.d=0"], "data.d=0: must be a positive integer", 2),
    ("epochs_negative", ["epochs=-1"], "epochs=-1: must be ≥ 0", 2),
    ("seed_negative", ["seed=-3"], "seed=-3: must be an integer in [0, 4294967295]", 2),
    ("unknown_device", ["device=tpu"], "device='tpu': unknown; choose one of auto, cpu, cuda", 2),
    ("unknown_dtype", ["dtype=float16"], "dtype='float16': unknown", 2),
    ("factor_below_one", ["divergence_factor=0.5"], "divergence_factor=0.5: must be > 1", 2),
    ("checkpoint_negative", ["checkpoint_every=-1"], "checkpoint_every=-1", 2),
    ("resume_and_overwrite", ["resume=true", "overwrite=true"], "overwrite=True: cannot", 2),
    ("unknown_key", ["learning_rate=0.1"], "Key 'learning_rate' not in 'Config'", 1),
    ("bad_interpolation", ["seed=${nope}"], "seed: Interpolation key 'nope' not found", 2),
    ("csv_no_path", ["data=csv"], "data.path=None: data=csv needs data.path=FILE", 2),
    ("csv_missing", ["data=csv", "data.path={dir}/nope.csv"], "nope.csv: no such file", 2),
    ("csv_directory", ["data=csv", "data.path={dir}"], "is a directory, not a CSV file", 2),
    ("csv_empty", ["data=csv", "data.path={dir}/empty.csv"], "the file is empty", 2),
    ("csv_header_only", ["data=csv", "data.path={dir}/header_only.csv"], "no data rows", 2),
    ("csv_ragged", ["data=csv", "data.path={dir}/ragged.csv"], "line 2 has 2 columns", 2),
    ("csv_text", ["data=csv", "data.path={dir}/text.csv"], "column 2 holds 'abc'", 2),
    ("csv_nan", ["data=csv", "data.path={dir}/nan.csv"], "column 2 holds 'nan'", 2),
    ("csv_inf", ["data=csv", "data.path={dir}/inf.csv"], "column 3 holds 'inf'", 2),
    ("csv_one_column", ["data=csv", "data.path={dir}/one_column.csv"], "a single column", 2),
    ("csv_not_text", ["data=csv", "data.path={dir}/binary.csv"], "is not a UTF-8 text CSV", 2),
    ("csv_overflow", ["data=csv", "data.path={dir}/huge.csv"], "dtype='float32': the data", 2),
    ("csv_n_mismatch", ["data=csv", "data.path={dir}/good.csv", "data.n=5"], "data.n=5: the", 2),
    ("resume_nothing", ["resume=true"], "resume=true: ", 2),
    ("n_test_zero", ["data.n_test=0"], "data.n_test=0: must be a positive integer (null: no", 2),
    (
        "n_test_csv",
        ["data=csv", "data.path={dir}/good.csv", "data.n_test=5"],
        "data.n_test=5: d",
        2,
    ),
    ("test_path_sphere", ["data.test_path=t.csv"], "data.test_path='t.csv': is a held-out", 2),
    (
        "test_path_missing",
        ["data=csv", "data.path={dir}/good.csv", "data.test_path={dir}/no.csv"],
        "no.csv: no such file",
        2,
    ),
    (
        "test_path_columns",
        ["data=csv", "data.path={dir}/good.csv", "data.test_path={dir}/two_columns.csv"],
        "rows have 2 columns and",
        2,
    ),
    ("width_negative", ["model.width=-3"], "model.width=-3: must be a positive integer", 2),
    ("lr_negative", ["optim.lr=-0.5"], "optim.lr=-0.5: must be a positive finite number", 2),
    ("unknown_optim", ["optim=adam"], "Could not find 'optim/adam'", 1),
    ("sampling_unknown", ["optim=sgd", "optim.sampling=strata"], "optim.sampling='strata'", 2),
    ("fraction_zero", ["optim=sgd", "optim.pass_fraction=0"], "optim.pass_fraction=0.0: m", 2),
    ("fraction_reshuffle", ["optim=sgd", "optim.pass_fraction=0.5"], "use optim.sampling=rep", 2),
    ("schedule_unknown", ["optim.schedule=cosine"], "optim.schedule='cosine': unknown", 2),
    ("patience_zero", ["optim.patience=0"], "optim.patience=0: must be a positive", 2),
    ("factor_above_one", ["optim.factor=10"], "optim.factor=10.0: must lie in (0, 1)", 2),
    ("decay_negative", ["optim.decay_epochs=-1"], "optim.decay_epochs=-1.0: must be", 2),
    ("decay_l2_negative", ["optim.weight_decay=-1"], "optim.weight_decay=-1.0: must be a fi", 2),
    ("logistic_labels", ["loss=logistic", "data=csv", "data.path={dir}/good.csv"], "not lab", 2),
    ("alpha_zero", ["model.alpha=0"], "model.alpha=0.0: must lie in [1e-06, 1e+06]", 2),
    ("param_unknown", ["model.parameterization=mup"], "model.parameterization='mup'", 2),
    ("budget_zero", ["ntk.memory_budget_mb=0"], "ntk.memory_budget_mb=0.0: must be", 2),
    ("tol_zero", ["ntk.tol=0"], "ntk.tol=0.0: must lie in (0, 1)", 2),
    ("ntk_budget_zero", ["ntk.budget=0"], "ntk.budget=0.0: must lie in (0, 1), e.g. 0.2", 2),
    ("ntk_budget_one", ["ntk.budget=1"], "ntk.budget=1.0: must lie in (0, 1)", 2),
    ("ntk_budget_negative", ["ntk.budget=-0.2"], "ntk.budget=-0.2: must lie in (0, 1)", 2),
    ("ntk_budget_nan", ["ntk.budget=nan"], "ntk.budget=nan: must lie in (0, 1)", 2),
    ("ntk_budget_text", ["ntk.budget=fast"], "full_key: ntk.budget", 1),
    ("max_iter_zero", ["ntk.max_iter=0"], "ntk.max_iter=0: must be a positive integer", 2),
    ("threads_zero", ["threads=0"], "threads=0: must be a positive integer", 2),
    # deep MLPs, the user's own model and data, the loss
    ("depth_zero", ["model=mlp", "model.depth=0"], "model.depth=0: must be a positive", 2),
    ("depth_not_mlp", ["model.depth=3"], "model.depth=3: model=leaky_relu has no depth", 2),
    ("activation_unknown", ["model=mlp", "model.activation=gelu"], "='gelu': unknown", 2),
    ("activation_not_mlp", ["model.activation=tanh"], "model=leaky_relu has no activation", 2),
    ("mlp_slope", [*MLP, "model.activation=leaky_relu", "model.negative_slope=2"], "=2.0: m", 2),
    ("mlp_alpha", [*MLP, "model.alpha=2"], "model.alpha=2.0: is an option of model=leaky_r", 2),
    ("mlp_train_output", [*MLP, "model.train_output=true"], "model.train_output=True: is", 2),
    ("custom_no_target", CUSTOM, "model._target_=None: model=custom needs model._target_=", 2),
    ("target_not_dotted", [*CUSTOM, "model._target_=N-et"], "must name an importable pkg.m", 2),
    ("target_not_custom", ["model._target_=a.B"], "only model=custom takes a target", 2),
    ("target_no_module", [*CUSTOM, "model._target_=nowhere.Net"], "no module named 'nowhere'", 2),
    ("target_no_name", [*CUSTOM, "model._target_=torch.nn.Nope"], "torch.nn has no 'Nope'", 2),
    ("target_no_d", [*CUSTOM, "model._target_=torch.nn.Linear"], "cannot be called with d=16", 2),
    ("target_bad_kwarg", [*OWN, "+model.hidden=4"], "cannot be called with d=3, hidden=4", 2),
    ("target_not_module", [*CUSTOM, f"{TARGET}=own_modules.NotAModule"], "not an nn.Module", 2),
    ("extra_key", ["+model.hidden=3"], "model.hidden=3: model=leaky_relu takes no such key", 2),
    ("custom_k_mse", [*CUSTOM, f"{TARGET}=own_modules.ThreeOutputs"], "k=3 outputs and loss", 2),
    ("custom_batchnorm", [*CUSTOM, f"{TARGET}=own_modules.WithBatchNorm"], "BatchNorm1d in t", 2),
    ("custom_structured", [*OWN, "ntk=structured"], "model=custom has no closed-form kernel", 2),
    ("data_no_target", DATA, "data._target_=None: data=custom needs data._target_=pkg", 2),
    ("data_ragged", [*DATA, "data._target_=own_modules.ragged"], "X (5, 3) and y (4,); need", 2),
    ("data_not_pair", [*DATA, "data._target_=own_modules.not_a_pair"], "not a pair (X, y)", 2),
    ("data_nan", [*DATA, "data._target_=own_modules.with_nan"], "X or y holds NaN", 2),
    ("data_bad_kwarg", [*LABELS, "+data.seed=1"], "cannot be called with seed=1", 2),
    ("data_n_mismatch", [*LABELS, "data.n=7"], "data.n=7: data=custom has n=12; leave", 2),
    ("digits_n", ["data=digits", "data.n=2000"], "data.n=2000: data=digits has 1797 samp", 2),
    ("loss_unknown", ["loss=hinge"], "loss='hinge': unknown; choose one of cross_entropy, logi", 2),
    ("ce_one_output", ["loss=cross_entropy"], "loss='cross_entropy': needs one output per", 2),
    ("ce_ntvp", [*MLP, "loss=cross_entropy", "ntk=ntvp"], "ntk.method='ntvp': loss=cross_", 2),
    ("ce_real_targets", [*MLP, "loss=cross_entropy"], "data=sphere gives targets that are", 2),
    ("ce_budget", [*MLP, *LABELS, "loss=cross_entropy", "ntk.memory_budget_mb=0.01"], "=0.01", 2),
]


IDS = [c[0] for c in CASES]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    for name, content in CSV.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder


def refusal(overrides: list[str], run_dir: Path) -> tuple[int, str]:
    """What `ntklab OVERRIDES hydra.run.dir=RUN_DIR` says and its exit status, in-process: 1 and
    Hydra's message for a config Hydra cannot compose, 2 and ntklab's one line for a bad value,
    file or folder; (0, "") when the run is accepted."""
    try:
        cfg = compose_config(*FAST, *overrides)
    except HydraException as err:
        return 1, f"{err}\n{err.__cause__ or ''}"
    try:
        run_experiment(load(cfg), run_dir, progress=False)
    except BAD_INPUT as err:
        return 2, one_line(err)
    return 0, ""


@pytest.mark.parametrize("case, overrides, expected, code", CASES, ids=IDS)
def test_bad_input_gives_one_clear_message(data_dir, tmp_path, case, overrides, expected, code):
    args = [o.replace("{dir}", str(data_dir)) for o in overrides]
    status, message = refusal(args, tmp_path / "run")
    assert status == code, message
    assert expected in message
    if code == 2:  # ours: exactly one line, naming key=value and the fix; nothing written
        assert "\n" not in message
        assert not (tmp_path / "run").exists()


def test_the_table_is_large_enough():
    assert len(CASES) >= 50 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, code, expected",
    [
        (["model.width=0"], 2, "ntklab: error: model.width=0: must be a positive integer"),
        (["learning_rate=0.1"], 1, "Key 'learning_rate' not in 'Config'"),
        (["seed=${nope}"], 2, "ntklab: error: seed: Interpolation key 'nope' not found"),
    ],
)
def test_the_cli_exit_status_and_silence(tmp_path, overrides, code, expected):
    """Through the real CLI: the status, the message on stderr and no traceback; our own
    refusals are one line and write no run files."""
    done = run_cli(*FAST, *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert expected in done.stderr
    if code == 2:
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("ntklab: error: ")
        assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu(tmp_path):
    status, message = refusal(["device=cuda"], tmp_path / "run")
    assert status == 2
    assert "device='cuda': no CUDA GPU is visible; use device=cpu or device=auto" in message


@pytest.mark.slow
def test_a_bad_job_in_a_sweep_lets_the_others_run(tmp_path):
    done = run_cli("-m", "epochs=2", "data.n=16", "model.width=0,8", f"hydra.sweep.dir={tmp_path}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "ntklab: error: model.width=0: must be a positive integer" in done.stderr
    assert (tmp_path / "data.n=16,epochs=2,model.width=8" / "summary.json").exists()
