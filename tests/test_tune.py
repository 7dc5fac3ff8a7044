"""MetaSchedule tuning (mnova tune): records per board, resumable, applied by compile, same outputs."""

import numpy as np
import pytest
import tvm
from tvm.s_tir.meta_schedule.arg_info import ArgInfo

from mnova_tvm import frontend, tune
from mnova_tvm.cli import main
from mnova_tvm.compile import build_for_board
from mnova_tvm.errors import MnovaError
from mnova_tvm.targets import load_board
from mnova_tvm.transform import kernel_module, schedule_passes
from onnx_models import branchy_cnn


def _scheduled_from_database(mod, board, root):
    """Names of the kernels of `mod` the database for `board` under `root` schedules."""
    with tune.tuned(root):
        database = tune.database_for(board)
    assert database is not None
    applied = tune.apply_database_pass(database, board.tvm_target())(kernel_module(mod, board.tvm_target()))
    return {gv.name_hint for gv, f in applied.functions_items()
            if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and f.attrs.get("tirx.is_scheduled", False)}


def test_tune_records_resumes_and_compiles_to_the_same_outputs(tmp_path, capsys):
    model = tmp_path / "branchy.onnx"
    model.write_bytes(branchy_cnn().SerializeToString())
    root = tmp_path / "tuning"
    args = ["tune", str(model), "--database", str(root), "--trials", "3", "--kernels", "2"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "2 kernels" in first and "host" in first
    assert "measuring knob setting 3" in first  # the trials are our schedule under other knob settings first
    assert (root / "host" / "database_tuning_record.json").stat().st_size > 0

    assert main(args) == 0  # resumed: every kernel already has its trials
    assert "0 new trials" in capsys.readouterr().out

    mod = frontend.load_model(str(model))
    board = load_board("host")
    assert len(_scheduled_from_database(mod, board, root)) == 2

    default_lib = build_for_board(mod, board, tmp_path / "default.so")
    with tune.tuned(root):
        tuned_lib = build_for_board(mod, board, tmp_path / "tuned.so")
    x = frontend.random_inputs(mod)
    expected = frontend.run(tvm.runtime.load_module(str(default_lib)), x)[0]
    got = frontend.run(tvm.runtime.load_module(str(tuned_lib)), x)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    out = tmp_path / "cli.so"
    assert main(["compile", "--board", "host", str(model), "--tuned", str(root), "-o", str(out)]) == 0
    assert out.exists()


def _kernel_params(mod, target, database=None):
    """Each kernel's parameter shapes once scheduled as compilation schedules it (packed weights
    have the tile innermost: a conv's 4-D weights become 5-D)."""
    scheduled = tvm.transform.Sequential(schedule_passes(target, database))(kernel_module(mod, target))
    return {gv.name_hint: [tuple(int(d) for d in arg.shape) for arg in ArgInfo.from_prim_func(f)]
            for gv, f in scheduled.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def test_default_records_pack_the_weights_the_default_schedules_pack(tmp_path):
    """Tuning measures the kernels compilation builds: a record of the default schedule compiles
    to the default kernel, its constant weights packed once at build time, not read unpacked."""
    mod = frontend.load_model("squeezenet1_1", input_size=48)
    board = load_board("host")
    root = tmp_path / "tuning"
    tune.tune([mod], board, root, trials_per_kernel=1, max_kernels=3, log=lambda *_: None)
    target = board.tvm_target()
    with tune.tuned(root):
        database = tune.database_for(board)
    default = _kernel_params(mod, target)
    tuned = _kernel_params(mod, target, database)
    packed = [name for name, shapes in default.items() if any(len(s) == 5 for s in shapes)]
    assert len(_scheduled_from_database(mod, board, root)) == 3 and packed
    assert tuned == default


def test_tuning_errors_are_one_line(tmp_path, capsys):
    assert main(["compile", "--board", "host", "squeezenet1_1", "--input-size", "48", "--tuned",
                 str(tmp_path / "missing"), "-o", str(tmp_path / "x.so")]) == 2
    err = capsys.readouterr().err
    assert "tuning folder" in err and "mnova tune" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.so").exists()
    assert main(["tune", "squeezenet1_1", "--input-size", "48", "--board", "rpi4b", "--database",
                 str(tmp_path / "db")]) == 2
    assert "over RPC" in capsys.readouterr().err
    with pytest.raises(MnovaError, match="at least 1"):
        tune.tune([frontend.load_model(branchy_cnn())], load_board("host"), tmp_path / "db", trials_per_kernel=0)
