"""rbl site: the static HTML leaderboards (generator, exports, and the pages in a real headless Chromium)."""

from __future__ import annotations

import copy
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from robustbench_lite import UsageError, site
from robustbench_lite.cli import main

LEADERBOARDS = Path(__file__).resolve().parent.parent / "leaderboards"
COMMITTED = sorted(LEADERBOARDS.glob("*.json"))
HOSTILE = '<script>alert("pwned")</script>'


def _sidecar(name: str) -> dict:
    return site.read_sidecar(LEADERBOARDS / f"{name}.json")


def _relabel(sidecar: dict, defense: str, label: str) -> dict:
    """The sidecar with the defense ``defense`` renamed ``label`` everywhere it appears."""
    sidecar = copy.deepcopy(sidecar)
    for section in ("ranking", "cells", "sanity"):
        for row in sidecar[section]:
            if row["defense"] == defense:
                row["defense"] = label
    sidecar["evaluations"] = {key.replace(f"/{defense}", f"/{label}"): value
                              for key, value in sidecar.get("evaluations", {}).items()}
    return sidecar


def test_hostile_labels_are_escaped_everywhere():
    page = site.page(_relabel(_sidecar("mnist-jpeg"), "none", HOSTILE), linked=True)
    assert HOSTILE not in page
    assert html.escape(HOSTILE) in page or "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # the page's own sorting and filtering script only


def test_a_hostile_attack_label_is_escaped_in_the_chart_legend():
    svg = str(site.accuracy_svg([{"attack": HOSTILE, "eps": 0.0, "accuracy": 50.0}], [0.0, 0.1], [HOSTILE]))
    assert HOSTILE not in svg and "&lt;script&gt;" in svg


def test_every_row_has_an_accuracy_chart_with_a_line_per_attack():
    sidecar = _sidecar("mnist")
    page = site.page(sidecar, linked=True)
    assert page.count('<svg class="chart"') == len(sidecar["ranking"]) == 5
    assert page.count("<polyline") == 5 * 4  # fgsm, pgd, apgd-ce and the worst case: no failed cell breaks a line


def test_a_failed_cell_breaks_its_line():
    cells = [{"attack": "pgd", "eps": eps, "accuracy": accuracy} for eps, accuracy in
             [(0.0, 90.0), (0.1, None), (0.2, 10.0), (0.3, 5.0)]]
    assert str(site.accuracy_svg(cells, [0.0, 0.1, 0.2, 0.3], ["pgd"])).count("<polyline") == 2


def test_the_partial_banner_shows_only_on_a_partial_leaderboard():
    sidecar = _sidecar("mnist")
    assert "partial-banner" not in site.page(sidecar, linked=False)
    sidecar["partial"] = "2 of 5 trained models evaluated; missing: cnn/at-pgd"
    assert 'id="partial-banner"' in site.page(sidecar, linked=False)
    assert "missing: cnn/at-pgd" in site.page(sidecar, linked=False)


def test_pages_load_nothing_from_the_network():
    page = site.page(_sidecar("mnist-jpeg"), linked=True)
    assert not re.search(r'(src|href)="(https?:)?//', page)


def _with_attack_renamed(sidecar: dict, old: str, new: str) -> dict:
    """The sidecar with the attack ``old`` renamed ``new`` in its attacks and cells."""
    sidecar = copy.deepcopy(sidecar)
    sidecar["attacks"] = {new if name == old else name: info for name, info in sidecar["attacks"].items()}
    for cell in sidecar["cells"]:
        cell["attack"] = new if cell["attack"] == old else cell["attack"]
    return sidecar


def _autoattack_label(sidecar: dict) -> str:
    return next(attack for attack in sidecar["attacks"] if attack == "aa" or attack.startswith("aa["))


def test_model_info_reports_autoattack_at_the_training_eps_only_when_aa_standard_ran():
    """autoattack_acc is AutoAttack's standard version only: aa[version=standard], all defaults. This
    project's fast ensemble, aa with other options, or the bare `aa` of older leaderboards (the fast
    ensemble under its former name) are other attacks."""
    original = _sidecar("mnist-aa")
    ran = _autoattack_label(original)
    standard = _with_attack_renamed(original, ran, "aa[version=standard]")
    with_aa = site.model_info(standard)["cnn/at-pgd"]
    cell = next(cell for cell in standard["cells"]
                if (cell["defense"], cell["attack"], cell["eps"]) == ("at-pgd", "aa[version=standard]", 0.3))
    assert with_aa["eps"] == 0.3 and with_aa["threat_model"] == "Linf" and with_aa["architecture"] == "cnn"
    assert with_aa["autoattack_acc"] == f"{cell['accuracy']:.2f}"
    assert "autoattack_acc" not in site.model_info(_sidecar("mnist"))["cnn/at-pgd"]
    for other in ("aa[version=fast]", "aa[version=standard,steps=10]", "aa"):
        assert "autoattack_acc" not in site.model_info(_with_attack_renamed(original, ran, other))["cnn/at-pgd"]


def test_model_info_marks_an_unranked_flagged_row_unreliable():
    info = site.model_info(_sidecar("mnist-jpeg"))
    assert info["cnn/jpeg"]["unreliable"] and "unranked (naive)" in info["cnn/jpeg"]["footnote"]
    assert not info["cnn/none"]["unreliable"]


def test_the_long_csv_has_one_row_per_cell():
    import pandas as pd
    from io import StringIO

    sidecar = _sidecar("mnist")
    frame = pd.read_csv(StringIO(site.long_csv(sidecar)))
    assert len(frame) == len(sidecar["cells"]) and set(frame["benchmark"]) == {"mnist"}
    assert frame["n"].dtype.kind == "i" and set(frame["norm"]) == {"linf"}


@pytest.mark.parametrize("args, expected", [
    (["site", "--out", "OUT"], "rbl: error: no leaderboard given; pass --json FILE (a sidecar, repeatable) or --db PATH"),
    (["site", "--json", "missing.json", "--out", "OUT"],
     "rbl: error: leaderboard file 'missing.json' does not exist; `rbl run` writes <out>/<name>.json"),
    (["site", "--json", str(LEADERBOARDS / "mnist.json"), "--json", str(LEADERBOARDS / "mnist.json"), "--out", "OUT"],
     "rbl: error: benchmark 'mnist' is given twice; give each benchmark's sidecar once"),
])
def test_bad_site_input_is_one_error_line_and_exit_2(tmp_path, capsys, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == expected
    assert not (tmp_path / "OUT").exists()


def test_a_file_that_is_not_a_sidecar_is_refused(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"cells": []}', encoding="utf-8")
    with pytest.raises(UsageError, match="is not a leaderboard's JSON sidecar"):
        site.read_sidecar(path)


# --- in a real browser: headless Chromium runs each page's own script, then ours, and dumps the DOM ---

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
# Before the page's script: record every uncaught error and console.error, which --dump-dom cannot show.
CAPTURE = """<script>window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });
var __consoleError = console.error;
console.error = function () { window.__errors.push(Array.prototype.join.call(arguments, " ")); __consoleError.apply(console, arguments); };
</script>"""
# After it: act as a reader would (click, type), then write what the page shows into the DOM.
ACT = """<script>(function () {
  function visible() { return Array.prototype.filter.call(document.querySelectorAll("#board > tbody > tr"), function (r) { return !r.hidden; }); }
  var result = {errors: window.__errors};
  var board = document.getElementById("board");
  if (board) {
    var worst = document.getElementById("sort-worst-case"), index = worst.cellIndex;
    function column() { return visible().map(function (r) { return r.cells[index].getAttribute("data-value"); }); }
    result.rows = visible().length;
    worst.click(); result.first_click = column();
    worst.click(); result.second_click = column();
    var filter = document.getElementById("filter-defense");
    filter.value = "at-pgd"; filter.dispatchEvent(new Event("input"));
    result.filtered = visible().map(function (r) { return r.getAttribute("data-defense"); });
    result.count = document.getElementById("row-count").textContent;
    var flag = document.querySelector("details.flag summary");
    result.tooltip = flag ? flag.getAttribute("title") : null;
  } else {
    result.links = Array.prototype.map.call(document.querySelectorAll("table.index a"), function (a) { return a.textContent; });
  }
  document.body.setAttribute("data-result", JSON.stringify(result));
})();</script>"""


def _in_browser(page: Path) -> dict:
    """What ACT found on ``page`` (a copy with CAPTURE and ACT added) after headless Chromium loaded it."""
    text = page.read_text(encoding="utf-8").replace("<head>", "<head>" + CAPTURE, 1).replace("</body>", ACT + "</body>")
    probe = page.with_name(f"probe-{page.name}")
    probe.write_text(text, encoding="utf-8")
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'data-result="([^"]*)"', dom)
    assert found, f"the probe never ran in {page.name}; the page's own script failed? {dom[-500:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def browsed(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("no chromium installed (apt-get install chromium): the site's browser tests need it")
    out = tmp_path_factory.mktemp("site")
    assert main(["site", *[arg for path in COMMITTED for arg in ("--json", str(path))], "--out", str(out)]) == 0
    return {name: _in_browser(out / f"{name}.html") for name in ("index", "mnist", "mnist-jpeg")}


def test_the_index_lists_every_committed_benchmark(browsed):
    assert browsed["index"]["links"] == [json.loads(path.read_text())["benchmark"] for path in COMMITTED]


def test_pages_run_without_console_errors(browsed):
    assert {name: result["errors"] for name, result in browsed.items()} == {name: [] for name in browsed}


def test_clicking_the_worst_case_header_sorts_by_it(browsed):
    scores = [row["R&G worst-case"] for row in _sidecar("mnist")["ranking"]]
    assert browsed["mnist"]["rows"] == 5
    assert [float(value) for value in browsed["mnist"]["first_click"]] == sorted(scores, reverse=True)
    assert [float(value) for value in browsed["mnist"]["second_click"]] == sorted(scores)


def test_the_defense_filter_narrows_to_one_defense(browsed):
    assert browsed["mnist"]["filtered"] == ["at-pgd"]  # picked from the list: not at-pgd-lr too
    assert browsed["mnist"]["count"] == "1 of 5 rows"


def test_a_flag_shows_its_reason_on_hover(browsed):
    finding = _sidecar("mnist-jpeg")["sanity"][0]
    assert browsed["mnist-jpeg"]["tooltip"] == f"{finding['check']}: {finding['reason']}"
    assert browsed["mnist"]["tooltip"] is None


def test_site_and_exports_from_a_results_store_match_the_run_s_sidecar(tmp_path, capsys):
    from robustbench_lite import run
    from robustbench_lite.store import merged_run

    out = tmp_path / "lb"
    run(dataset="synthetic[n_train=128,n_test=24]", models="cnn", defenses="none", attacks="fgsm", eps="0,0.1",
        epochs=1, device="cpu", cache_dir=tmp_path / "c", out=out, name="tiny", progress=False)
    db = str(out / "results.db")
    assert main(["site", "--db", db, "--out", str(tmp_path / "site")]) == 0
    assert "rbl site --db" in (tmp_path / "site" / "index.html").read_text()
    expected = site.read_sidecar(out / "tiny.json")
    expected["store"] = merged_run([out / "results.db"])[1]["store"]  # the store also knows when the run finished
    capsys.readouterr()
    for fmt in site.FORMATS:
        assert main(["leaderboard", "--db", db, "--format", fmt]) == 0
        assert capsys.readouterr().out == site.render_format(expected, fmt)


def test_an_older_sidecar_s_ranks_are_not_trusted(tmp_path):
    """An older version kept a number for a worst case that missed a failed attack, and ranked it: the site
    derives ranks and flags from the cells with this version's checks, and shows no number for such a cell."""
    old = json.loads((LEADERBOARDS / "mnist-jpeg.json").read_text())
    for cell in old["cells"]:
        if (cell["model"], cell["defense"], cell["eps"]) == ("cnn", "none", 0.3):  # the eps model_info reports
            if cell["attack"] == "fgsm":
                cell.update(status="failed", accuracy=None, correct=None, error="RuntimeError: boom")
            elif cell["attack"] == "worst-case":
                cell.update(status="incomplete", error="computed without the failed attacks: fgsm")
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    sidecar = site.read_sidecar(path)
    row = next(row for row in sidecar["ranking"] if row["defense"] == "none")
    assert row["rank"] is None and "failed-cells" in row["flags"]
    info = site.model_info(sidecar)["cnn/none"]
    assert info["unreliable"] and info["worst_case_acc"] is None
