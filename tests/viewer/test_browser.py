"""The built pages in headless Chromium: they render cleanly, show values on hover and click, stay safe."""

from __future__ import annotations

from pathlib import Path

import pytest
from viewer_helpers import (
    EMOJI_TOKEN,
    HOSTILE_IMG,
    HOSTILE_TOKEN,
    METHODS,
    PLUGIN_METHOD,
    RTL_TOKEN,
    UNITS,
    make_attention_results,
    make_head_record,
)

from neuroscribe import serialization
from neuroscribe.cli import main
from neuroscribe.viewer.build import build_site
from neuroscribe.viewer.headless import Page

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def run_site(small_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_site(small_run, tmp_path_factory.mktemp("run-site")).out_dir


@pytest.fixture(scope="module")
def record_site(real_record_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_site(real_record_path, tmp_path_factory.mktemp("record-site")).out_dir


def _unit_page(site: Path, layer: int, index: int) -> str:
    return (site / "units" / "mlp_neuron" / str(layer) / f"{index}.html").as_uri()


def test_every_page_renders_without_errors(browser: Page, run_site: Path, record_site: Path) -> None:
    pages = [run_site / "index.html", record_site / "index.html", record_site / "units/mlp_neuron/1/1.html",
             *(run_site / "units" / "mlp_neuron" / str(u.layer) / f"{u.index}.html" for u in UNITS)]
    for page in pages:
        browser.open(page.as_uri())
        assert browser.problems.all() == [], f"{page}: {browser.problems.all()}"
        assert browser.evaluate("document.querySelectorAll('main .panel').length") >= 2
        if run_site in page.parents:
            assert "plumbing check" in browser.evaluate("document.querySelector('.note').textContent")


def test_hover_and_click_show_the_value(browser: Page, record_site: Path) -> None:
    browser.open((record_site / "units/mlp_neuron/1/1.html").as_uri())
    browser.hover(".excerpt .tok")
    tip = browser.evaluate("document.getElementById('tip').textContent")
    assert browser.evaluate("document.getElementById('tip').classList.contains('shown')")
    assert tip.startswith('token " omission"') and "activation -0.1166" in tip
    browser.click(".excerpt .tok:nth-child(3)")
    assert browser.evaluate("document.querySelectorAll('.tok.pinned').length") == 1
    pinned = browser.evaluate("document.getElementById('tip').textContent")
    assert "activation" in pinned and '" Real"' in pinned
    browser.hover(".excerpt .tok:nth-child(5)")  # a pinned value stays put while the mouse moves on
    assert browser.evaluate("document.getElementById('tip').textContent") == pinned
    browser.click("h1")
    assert not browser.evaluate("document.getElementById('tip').classList.contains('shown')")


def test_attention_head_pairs_follow_the_hovered_query(browser: Page, tmp_path: Path) -> None:
    source = tmp_path / "head.json"
    serialization.dump_json_file(source, make_head_record())
    site = build_site(source, tmp_path / "site").out_dir
    browser.open((site / "units" / "attention_head" / "3" / "2.html").as_uri())
    assert browser.problems.all() == []
    colours = "[...document.querySelectorAll('.excerpt.pairs')[0].children].map(t => t.style.backgroundColor)"
    resting = browser.evaluate(colours)
    assert resting[4] != "transparent" and resting[1] == "transparent"  # query 4's strongest pair shows on it
    browser.hover(".excerpt.pairs .tok:nth-child(5)")
    hovered = browser.evaluate(colours)
    assert hovered[1] != "transparent" and hovered[0] == hovered[2] == "transparent"  # its key, the first " cat"
    assert 'key " cat" at 1: 2.0000' in browser.evaluate("document.getElementById('tip').textContent")
    browser.hover("h1")
    assert browser.evaluate(colours) == resting


def test_quantile_groups_are_drawn_when_opened(browser: Page, record_site: Path) -> None:
    browser.open((record_site / "units/mlp_neuron/1/1.html").as_uri())
    count = "document.querySelectorAll('.tok').length"
    closed = browser.evaluate(count)
    assert browser.evaluate("document.querySelectorAll('details > summary').length") == 5
    browser.click("details > summary")
    assert browser.evaluate("document.querySelector('details').open")
    assert browser.wait_until(f"{count} > {closed + 20 * 40}")  # twenty excerpts of up to 64 tokens
    assert browser.problems.all() == []


def test_true_and_simulated_rows_line_up(browser: Page, run_site: Path) -> None:
    unit = UNITS[1]  # calibrated under the first method
    browser.open(_unit_page(run_site, unit.layer, unit.index))
    offsets = browser.evaluate(
        "[...document.querySelectorAll('.paired')[0].querySelectorAll('.stack')].map(s =>"
        " [s.children[0].getBoundingClientRect().left, s.children[1].getBoundingClientRect().left])")
    assert offsets and all(a == b for a, b in offsets)
    browser.hover(".paired .stack .tok.sim")
    tip = browser.evaluate("document.getElementById('tip').textContent")
    assert "activation" in tip and "simulated (calibrated to activation scale)" in tip
    heads = browser.evaluate("[...document.querySelectorAll('.excerpt-head')].map(h => h.textContent)")
    assert any("top-activating" in h and "correlation" in h and "calibrated" in h for h in heads)


def test_uncalibrated_simulation_shows_its_distribution(browser: Page, run_site: Path) -> None:
    unit = UNITS[0]
    browser.open(_unit_page(run_site, unit.layer, unit.index))
    browser.hover(".paired .stack .tok.sim")
    tip = browser.evaluate("document.getElementById('tip').textContent")
    assert "simulated (0-10 scale)" in tip and "simulator's likeliest values:" in tip


def test_hostile_tokens_stay_text_and_others_stay_intact(browser: Page, run_site: Path) -> None:
    unit = UNITS[0]
    browser.open(_unit_page(run_site, unit.layer, unit.index))
    assert browser.evaluate("window.__pwned === undefined")
    assert browser.problems.dialogs == []
    assert browser.evaluate("document.querySelectorAll('main script, main img').length") == 0
    texts = browser.evaluate("[...document.querySelectorAll('.excerpt .tok')].map(t => t.textContent)")
    for token in (HOSTILE_TOKEN, HOSTILE_IMG, RTL_TOKEN, EMOJI_TOKEN):
        assert token.replace(" ", "\u00b7") in texts  # spaces are shown as middle dots
    assert "\u21b5" in texts and "\u2192" in texts and "\u00b7\u00b7" in texts  # newline, tab, two spaces
    explanation = browser.evaluate("document.querySelector('.explanation-text').textContent")
    assert explanation.endswith(HOSTILE_TOKEN)
    browser.open((run_site / "index.html").as_uri())
    assert browser.evaluate("window.__pwned === undefined") and browser.problems.all() == []


def test_index_filters_and_sorts(browser: Page, run_site: Path) -> None:
    browser.open((run_site / "index.html").as_uri())
    rows = "document.querySelectorAll('#units tbody tr')"
    assert browser.evaluate(f"{rows}.length") == len(UNITS) * len(METHODS)
    browser.evaluate("(() => { const f = document.getElementById('f-layer'); f.value = '2';"
                     " f.dispatchEvent(new Event('input')); })()")
    assert browser.evaluate(f"{rows}.length") == len(METHODS)
    browser.evaluate("(() => { const f = document.getElementById('f-layer'); f.value = '';"
                     " f.dispatchEvent(new Event('input')); })()")
    browser.click("th[data-key=score]")
    scores = browser.evaluate(f"[...{rows}].map(r => r.children[3].textContent)")
    numbers = [float(s) for s in scores if s != "\u2013"]
    assert numbers == sorted(numbers, reverse=True) and scores[-1] == "\u2013"  # the failed unit sorts last
    href = browser.evaluate("document.querySelector('#units tbody tr a').href")
    assert href.startswith("file://") and Path(href.removeprefix("file://")).is_file()


def test_index_of_records_only_has_no_score_columns(browser: Page, record_site: Path, run_site: Path) -> None:
    visible = "[...document.querySelectorAll('#units th')].filter(th => th.offsetParent).map(th => th.textContent)"
    browser.open((record_site / "index.html").as_uri())
    assert browser.evaluate(visible) == ["layer", "index", "max act."]
    assert browser.evaluate("document.getElementById('distributions').hidden")
    browser.open((run_site / "index.html").as_uri())
    assert "score" in browser.evaluate(visible)
    assert not browser.evaluate("document.getElementById('distributions').hidden")
    assert browser.evaluate("document.querySelectorAll('#distributions rect.bar').length") == 20 * len(METHODS)
    captions = browser.evaluate("[...document.querySelectorAll('#distributions figcaption')].map(c => c.textContent)")
    assert [c.split(":")[0] for c in captions] == list(METHODS)
    assert captions[1].endswith(f"{len(UNITS) - 1} scored")  # the failed unit has no score


def test_plugin_scores_are_shown_by_name(browser: Page, scorer_run: Path, tmp_path: Path) -> None:
    site = build_site(scorer_run, tmp_path / "site").out_dir
    browser.open(_unit_page(site, UNITS[0].layer, UNITS[0].index))
    assert browser.problems.all() == []
    panel = f"[...document.querySelectorAll('.panel')].find(p => p.textContent.includes('{PLUGIN_METHOD}')).innerText"
    shown = browser.evaluate(panel)
    assert "keyword_hits\ntop and random\n0.813\ntop only\n0.900\nrandom only\nn/a\nkeyword_precision" in shown
    assert "scored excerpt" not in shown  # no simulation panels for a plugin scorer
    examples = "[...document.querySelectorAll('details')].find(d => d.textContent.startsWith('judged examples'))"
    browser.evaluate(f"{examples}.open = true")  # drawn when opened
    assert browser.wait_until(f"{examples}.querySelectorAll('.tok').length > 0")
    assert "random · target 0.000 · prediction n/a" in browser.evaluate(f"{examples}.innerText")
    browser.open((site / "index.html").as_uri())
    assert browser.problems.all() == []
    assert browser.evaluate("document.querySelector('th[data-key=score]').textContent") == "headline score"
    cells = browser.evaluate("[...document.querySelectorAll('#units tbody td:nth-child(3)')].map(c => c.textContent)")
    assert f"{PLUGIN_METHOD} \u00b7 keyword_hits" in cells and METHODS[0] in cells


def test_an_asked_token_pair_marks_its_query_and_key(browser: Page, tmp_path: Path) -> None:
    source = tmp_path / "heads.jsonl"
    source.write_text(serialization.dumps(make_attention_results()) + "\n", encoding="utf-8")
    site = build_site(source, tmp_path / "site").out_dir
    browser.open((site / "units" / "attention_head" / "3" / "2.html").as_uri())
    assert browser.problems.all() == []
    examples = "[...document.querySelectorAll('details')].find(d => d.textContent.startsWith('judged examples'))"
    browser.evaluate(f"{examples}.open = true")
    assert browser.wait_until(f"{examples}.querySelectorAll('.tok').length > 0")
    assert "strong pair · query 4 \u2190 key 1 · target 1.000 · prediction 0.800" in browser.evaluate(
        f"{examples}.innerText")
    marked = f"[...{examples}.querySelectorAll('.excerpt')].map(e => [[...e.children].findIndex(t => " \
             "t.classList.contains('query')), [...e.children].findIndex(t => t.classList.contains('key'))])"
    assert browser.evaluate(marked) == [[4, 1], [2, 0], [3, 3]]


def test_screenshot(browser: Page, run_site: Path, tmp_path: Path) -> None:
    unit = UNITS[1]
    browser.open(_unit_page(run_site, unit.layer, unit.index))
    browser.hover(".paired .stack .tok")
    shot = browser.screenshot(tmp_path / "unit.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


@pytest.mark.slow  # starts a second browser
def test_cli_screenshot_of_a_unit_page(browser: Page, small_run: Path, tmp_path: Path) -> None:
    unit = UNITS[2]
    png = tmp_path / "shots" / "unit.png"
    argv = ["view", str(small_run), "--out", str(tmp_path / "site"), "--screenshot", str(png),
            "--screenshot-unit", f"{unit.layer}/{unit.index}"]
    assert main(argv) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main([*argv[:-1], "9/9"]) == 2  # a unit the run does not have


def test_latents_of_two_autoencoders_on_one_layer_stay_apart(browser: Page, tmp_path: Path) -> None:
    from viewer_helpers import make_record, simulation_line

    from neuroscribe.experiments.store import RunStore
    from neuroscribe.records import UnitId, UnitKind

    store = RunStore(tmp_path / "run")
    store.create()
    store.write_manifest({"config_hash": "0", "methods": [METHODS[0]], "unit_kind": "autoencoder_latent",
                          "backends": {"default": {"type": "hf", "model": "embedded"}}})
    units = [UnitId(3, 5, UnitKind.AUTOENCODER_LATENT, sae) for sae in ("mlp3", "res3")]
    for seed, unit in enumerate(units):
        record = make_record(unit, seed)
        store.write_record(unit, record)
        store.append(METHODS[0], *simulation_line(unit, record, METHODS[0], seed))
    site = build_site(store.path, tmp_path / "site").out_dir
    browser.open((site / "index.html").as_uri())
    assert browser.problems.all() == []
    cells = "[...document.querySelectorAll('#units tbody tr td:first-child a')]"
    assert browser.evaluate(f"{cells}.map(a => a.textContent)") == ["mlp3:3", "res3:3"]
    pages = browser.evaluate(f"{cells}.map(a => a.href)")
    assert [Path(p.removeprefix("file://")).relative_to(site.resolve()).as_posix() for p in pages] == [
        "units/autoencoder_latent/mlp3/3/5.html", "units/autoencoder_latent/res3/3/5.html"]
    for page, unit in zip(pages, units, strict=True):
        browser.open(page)
        assert browser.problems.all() == []
        assert f"autoencoder\n{unit.sae}" in browser.evaluate("document.querySelector('main').innerText")
