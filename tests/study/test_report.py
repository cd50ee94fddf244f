"""Reports of a finished study: md, csv and html; the HTML opened in headless Chromium."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess

import pytest

from sec4sr_core.cli import main
from sec4sr_core.study.stats import r1

from .conftest import WEAK_PGD, cell


def test_markdown_has_the_papers_tables(small_study, capsys):
    out, summary = small_study
    assert main(["report", str(out), "--format", "md"]) == 0
    text = capsys.readouterr().out
    assert "## Non-adaptive attacks — ge2e · csi-e" in text and "## Adaptive attacks — ge2e · csi-e" in text
    assert "## Reliability warnings" in text
    header = next(line for line in text.splitlines() if line.startswith("| Defense | A_b |"))
    assert header == f"| Defense | A_b | {WEAK_PGD} | test-flip | R1 |"
    assert f"| {WEAK_PGD} A_a | {WEAK_PGD} L2 | {WEAK_PGD} SNR | {WEAK_PGD} PESQ |" in text
    # the qt row of the non-adaptive table carries A_b, both A_a and R1 from the stored rows
    qt = summary["systems"][0]
    row = next(line for line in text.splitlines() if line.startswith("| qt:q=512 | ") and line.count("|") == 6)
    a1 = cell(summary, "qt:q=512", WEAK_PGD, "non-adaptive")["adversarial_accuracy"]
    a2 = cell(summary, "qt:q=512", "test-flip", "non-adaptive")["adversarial_accuracy"]
    expected_r1 = r1(qt["benign"]["qt:q=512"], [a1, a2])
    assert row.split("|")[5].strip() == f"{100 * expected_r1:.1f}"


def test_csv_has_one_line_per_cell(small_study, tmp_path):
    out, summary = small_study
    target = tmp_path / "cells.csv"
    assert main(["report", str(out), "--format", "csv", "--output", str(target)]) == 0
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert len(rows) == len(summary["results"]) == 5 * 2 * 2
    flip = next(r for r in rows if r["defense"] == "none" and r["attack"] == "test-flip" and r["setting"] == "adaptive")
    assert flip["knowledge"] == "decision-based" and flip["n"] == "4" and float(flip["queries"]) == 1.0
    assert "black-box-beats-white" in next(
        r for r in rows if r["defense"] == "none" and r["attack"] == "test-flip" and r["setting"] == "non-adaptive"
    )["warnings"]


def test_report_of_a_folder_without_results_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "results.sqlite" in err and err.count("\n") == 1
    assert main(["report", str(tmp_path / "missing")]) == 2


PROBE = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images).map(function (i) { return i.naturalWidth + 'x' + i.naturalHeight; });
  var audios = Array.from(document.querySelectorAll('audio'));
  var pending = audios.length;
  function done() {
    var p = document.createElement('pre'); p.id = 'probe';
    p.textContent = JSON.stringify({images: imgs, tables: document.querySelectorAll('table.results').length,
      audio: audios.map(function (a) { return [a.readyState, a.duration, a.error ? a.error.code : 0]; })});
    document.body.appendChild(p);
  }
  if (!pending) { done(); return; }
  audios.forEach(function (a) {
    var fin = function () { if (--pending === 0) done(); };
    if (a.readyState >= 1) { fin(); } else { a.addEventListener('loadedmetadata', fin); a.addEventListener('error', fin); a.load(); }
  });
});
</script>
"""


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="chromium is installed by `make test` (system-deps)")
def test_html_report_renders_in_headless_chromium(small_study, tmp_path):
    import json

    out, summary = small_study
    assert main(["report", str(out), "--format", "html", "--output", str(tmp_path / "report.html")]) == 0
    html = (tmp_path / "report.html").read_text()
    assert "http://" not in html and "https://" not in html  # self-contained: nothing to fetch
    assert html.count("data:image/png;base64,") >= 1 and html.count("data:audio/wav;base64,") >= 3
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"))
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000", "--dump-dom",
           probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=240).stdout
    m = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert m, "the probe script did not run; chromium output:\n" + dom[:2000]
    facts = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    # the paper's tables, the heat map decoded as a real image, and playable audio
    assert facts["tables"] >= 4
    assert facts["images"] and all(int(s.split("x")[0]) > 100 and int(s.split("x")[1]) > 100 for s in facts["images"])
    assert len(facts["audio"]) >= 3
    for ready, duration, error in facts["audio"]:
        assert error == 0 and ready >= 1 and duration == pytest.approx(1.0, abs=0.01)
    assert "<table" in dom and "Non-adaptive attacks" in dom


def test_run_report_flag_writes_html(small_study):
    from sec4sr_core.report import write_report

    out, _ = small_study
    path = write_report(out, "html")
    assert path == out / "report.html" and path.stat().st_size > 10_000
