import numpy as np
import pytest

from c2np.reporting.normalise import robust_scores
from c2np.reporting.tables import render, runs_frame, summary_tables


def test_robust_scores_follow_direction_and_median():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    low = robust_scores(x, lower_is_better=True)
    high = robust_scores(x, lower_is_better=False)
    assert low[2] == pytest.approx(0.5) and high[2] == pytest.approx(0.5)
    assert np.all(np.diff(low) < 0) and np.all(np.diff(high) > 0)
    # z = (1 - 3) / MAD(=1) = -2, flipped to +2 for a lower-is-better metric.
    assert low[0] == pytest.approx(1 / (1 + np.exp(-2)))
    assert np.all(robust_scores(np.array([0.0, 0.0, 0.0]), False) == 0.5)  # MAD = 0


def _result(model, seed, rmse, joint):
    return {"task": 2, "split": "id", "model": model, "seed": seed,
            "metrics": {"lattice_rmse": rmse, "spacegroup_accuracy": joint, "joint_accuracy": joint},
            "time_per_epoch": 10.0 + seed}


def test_tables_bold_best_and_underline_second():
    results = [_result(m, s, rmse + 0.01 * s, j) for m, rmse, j in
               (("A", 0.1, 0.9), ("B", 0.5, 0.5), ("C", 2.0, 0.1)) for s in range(3)]
    (raw, norm), = summary_tables(runs_frame(results)).values()
    assert raw.loc["A", ("lattice_rmse", "mean")] == pytest.approx(0.11)
    assert raw.loc["A", ("lattice_rmse", "std")] == pytest.approx(0.01)
    assert norm.loc["A", ("lattice_rmse", "mean")] > 0.5 > norm.loc["C", ("lattice_rmse", "mean")]
    assert norm.loc["B", ("time_per_epoch", "mean")] == pytest.approx(11.0)  # time stays raw
    md = render(raw, "md", normalised=False)
    row_a = next(line for line in md.splitlines() if line.startswith("| A "))
    row_b = next(line for line in md.splitlines() if line.startswith("| B "))
    assert row_a.count("**") == 2 * 4  # best in every column, time tied with the others
    assert "**11 ± 1**" in row_b  # equal times share the best rank
    assert "<u>" in row_b
    tex = render(norm, "latex", normalised=True)
    assert r"\textbf" in tex and r"\underline" in tex and r"\begin{tabular}" in tex


def test_results_of_an_older_objective_are_rows_of_their_own():
    """Task 1 seeds trained under objective version 1 (no version in their run info) are
    never averaged with those of the current version; Task 2 (still version 1), reference
    rows (no run) and current Task 1 results keep their names."""
    def task1(seed, rmsd, version):
        run = {"seed": seed} | ({"objective_version": version} if version else {})
        return {"task": 1, "split": "id", "model": "cdvae", "seed": seed, "metrics": {"rmsd": rmsd},
                "model_run": run}

    results = [task1(0, 1.0, None), task1(1, 3.0, 1), task1(0, 2.0, 2), task1(1, 2.2, 2),
               {"task": 1, "split": "id", "model": "template", "seed": 0, "metrics": {"rmsd": 0.5}},
               _result("cdvae", 0, 0.1, 0.9) | {"model_run": {"objective_version": 1}}]
    frame = runs_frame(results)
    assert list(frame["model"]) == ["cdvae [objective v1]"] * 2 + ["cdvae"] * 2 + ["template", "cdvae"]
    raw, _ = summary_tables(frame)[(1, "id")]
    assert raw.loc["cdvae", ("rmsd", "mean")] == pytest.approx(2.1)
    assert raw.loc["cdvae [objective v1]", ("rmsd", "mean")] == pytest.approx(2.0)
    # a model whose objective moved on alone (FlowMM Task 1, version 3): its version-2
    # results are rows of their own, while CDVAE's version 2 is current
    flow = [task1(0, 6.0, 2) | {"model": "flowmm"}, task1(0, 2.0, 3) | {"model": "flowmm"}]
    assert list(runs_frame(flow + [task1(0, 2.0, 2)])["model"]) == ["flowmm [objective v2]", "flowmm", "cdvae"]


def test_readme_rows_name_their_seeds_when_id_and_ood_come_from_different_runs():
    """benchmarks/readme_results.py: a row whose ID cell is seed 1's and OOD cell seed 0's
    must not read as two seeds of both splits."""
    import pandas as pd
    from benchmark_scripts import load_benchmark

    module = load_benchmark("readme_results")
    same = {"id": pd.Series([0, 1, 2]), "ood": pd.Series([2, 1, 0])}
    assert module.seeds_text(same) == "3"
    assert module.seeds_text({"id": pd.Series([1]), "ood": pd.Series([0])}) == "ID 1 / OOD 0"
    assert module.seeds_text({"id": pd.Series([0, 1]), "ood": pd.Series([], dtype=int)}) == "ID 0,1 / OOD –"


def test_figure_ticks_count_the_seeds_of_each_split():
    """benchmarks/readme_results.py's bars: a learned bar of one seed has no error bar, so its
    tick says so ("flowmm (1/0)": one ID seed, no OOD); reference rows have no seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from benchmark_scripts import load_benchmark

    module = load_benchmark("readme_results")
    rows = [{"model": "cdvae", "split": s, "seed": k, "rmsd": 2.0 + k / 10} for s in ("id", "ood") for k in range(3)]
    rows += [{"model": "flowmm", "split": "id", "seed": 1, "rmsd": 2.5},
             {"model": "template", "split": "id", "seed": 0, "rmsd": 1.2},
             {"model": "template", "split": "ood", "seed": 0, "rmsd": 1.6}]
    fig, ax = plt.subplots()
    module.bars(ax, pd.DataFrame(rows), "rmsd", ("id", "ood"), ["ID", "OOD"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["template", "cdvae (3/3)", "flowmm (1/0)"]
    plt.close(fig)


def test_runs_table_gives_throughput_as_particles_and_atoms_per_second(tmp_path):
    """benchmarks/readme_results.py's runs table: beside s/epoch, the training set's particles
    and atoms (run.json's train_records, train_atoms) divided by it; a run.json without them
    (an older record) shows a dash rather than a made-up rate. A run trained with DDP names
    its GPUs: its s/epoch is theirs together."""
    import json

    from benchmark_scripts import load_benchmark

    module = load_benchmark("readme_results")
    base = {"model": "cdvae", "task": 1, "epochs": 12, "converged": True, "converged_epoch": 11,
            "best_val_loss": 1.5, "best_epoch": 1, "time_per_epoch": 8.0, "device": "NVIDIA H200",
            "objective_version": 2}
    for seed, extra in ((0, {"train_records": 1000, "train_atoms": 3_200_000}), (1, {}), (2, {"devices": 4}),
                        (3, {"devices": 1})):
        run = tmp_path / "runs" / f"cdvae-task1-seed{seed}"
        run.mkdir(parents=True)
        (run / "run.json").write_text(json.dumps(base | {"seed": seed} | extra))
        (run / "metrics.csv").write_text("epoch,val_loss\n0,3.0\n1,1.5\n")
    lines = module.runs_block([("radius", tmp_path)]).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    assert [(r["seed"], r["s/epoch"], r["particles/s"], r["atoms/s"], r["device"]) for r in rows] == [
        ("0", "8.0", "125", "400,000", "NVIDIA H200"), ("1", "8.0", "–", "–", "NVIDIA H200"),
        ("2", "8.0", "–", "–", "4 x NVIDIA H200 (DDP)"), ("3", "8.0", "–", "–", "NVIDIA H200")]


def test_a_report_refuses_results_of_different_stores_or_of_seeds_scored_on_different_samples(tmp_path):
    """One table averages and ranks results as scores of the same test sets. Results of two
    stores (another build configuration: other particles, other splits) or a model's seeds
    scored on different samples would be averaged without a word: the report refuses them,
    says which, and writes nothing."""
    from c2np.errors import C2NPError
    from c2np.reporting.tables import write_report

    def result(model, seed, store, sample=None, n=45198):
        return _result(model, seed, 0.5, 0.5) | {"store_fingerprint": store, "sample": sample, "n_samples": n}

    same = [result(m, s, "44d33f63d87f" + "0" * 52) for m in ("A", "B") for s in range(2)]
    write_report(same, tmp_path / "ok")
    assert (tmp_path / "ok" / "raw.csv").exists()
    other_store = same + [result("C", 0, "79887c02e5a1" + "0" * 52)]
    with pytest.raises(C2NPError, match=r"44d33f63d87f.*79887c02e5a1|79887c02e5a1.*44d33f63d87f") as err:
        write_report(other_store, tmp_path / "mixed")
    assert "C" in str(err.value) and not (tmp_path / "mixed").exists()
    other_sample = same + [result("A", 2, same[0]["store_fingerprint"], {"per_material_radius": 2, "seed": 0}, 648)]
    with pytest.raises(C2NPError, match="A, Task 2 id: seeds scored on different samples") as err:
        write_report(other_sample, tmp_path / "sampled")
    assert "648 (2/group)" in str(err.value) and "45,198" in str(err.value)
    assert not (tmp_path / "sampled").exists()


def test_c2np_report_says_why_it_refuses_and_exits_2(tmp_path):
    import json

    from typer.testing import CliRunner

    from c2np.cli import app

    files = []
    for k, store in enumerate(("a" * 64, "b" * 64)):
        path = tmp_path / f"r{k}.json"
        path.write_text(json.dumps({"format": "c2np-result", "task": 2, "split": "id", "model": f"M{k}", "seed": 0,
                                    "store_fingerprint": store, "n_samples": 10, "sample": None,
                                    "metrics": {"lattice_rmse": 1.0, "joint_accuracy": 0.5}}))
        files.append(str(path))
    res = CliRunner().invoke(app, ["report", *files, "--out", str(tmp_path / "rep")])
    assert res.exit_code == 2 and "different stores" in res.output and "aaaaaaaaaaaa" in res.output
    assert not (tmp_path / "rep").exists()


def test_a_report_refuses_task2_results_scored_with_other_tolerances(tmp_path):
    """Joint accuracy depends on the tolerances `c2np evaluate --length-rtol/--angle-atol`
    scored it with (recorded in the result): results of two tolerances in one table would be
    ranked as one measure. Task 1's metric definitions are checked the same way."""
    from c2np.errors import C2NPError
    from c2np.reporting.tables import write_report

    default = {"length_rtol": 0.02, "angle_atol_deg": 1.0}
    results = [_result(m, 0, 0.5, 0.5) | {"tolerances": default} for m in ("A", "B")]
    write_report(results, tmp_path / "ok")
    loose = _result("C", 0, 0.5, 0.9) | {"tolerances": {"length_rtol": 0.1, "angle_atol_deg": 5.0}}
    with pytest.raises(C2NPError, match="Task 2 results scored with different tolerances") as err:
        write_report(results + [loose], tmp_path / "loose")
    assert "length_rtol 0.1" in str(err.value) and "C" in str(err.value)
    task1 = [{"task": 1, "split": "id", "model": m, "seed": 0, "metrics": {"rmsd": 1.0},
              "definitions": {"lev_cutoff_A": cut}} for m, cut in (("A", 3.0), ("B", 3.5))]
    with pytest.raises(C2NPError, match="Task 1 results scored with different metric definitions"):
        write_report(task1, tmp_path / "defs")
