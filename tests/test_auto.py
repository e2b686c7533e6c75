"""The "auto" reader: default when it is sure, else general — the rule, its file and its threshold."""
import json

import numpy as np
import pytest

from captchalens.auto import AutoRule, load_rule, save_rule
from captchalens.contract import ContractError
from captchalens.training.auto_rule import fit_threshold


def test_the_threshold_keeps_first_exactly_where_it_is_right():
    # first is right when sure (>= 0.6) and wrong below; then is right everywhere below 0.6
    conf = np.array([0.1, 0.2, 0.3, 0.55, 0.65, 0.8, 0.9, 0.95])
    first_ok = conf >= 0.6
    then_ok = ~first_ok
    t, acc = fit_threshold(conf, first_ok, then_ok)
    assert acc == 1.0 and 0.55 < t <= 0.65
    assert all(AutoRule("a", "b", t).first_stands(c) == ok for c, ok in zip(conf, first_ok))


def test_when_then_is_always_better_first_never_answers():
    conf = np.array([0.5, 0.7, 0.9])
    t, acc = fit_threshold(conf, np.array([False, False, True]), np.array([True, True, True]))
    assert acc == 1.0 and not any(c >= t for c in conf[:2])  # first never answers where it is wrong


def test_the_rule_file_round_trips_and_bad_rules_are_named(tmp_path):
    rule = AutoRule("default", "general", 0.42, {"auto": 0.9})
    path = save_rule(rule, tmp_path / "auto.json")
    assert load_rule(path) == rule
    assert load_rule(tmp_path / "missing.json") is None
    for bad in ({"first": "a", "then": "b"}, {"first": "a", "then": "a", "sure": 0.5},
                {"first": "a", "then": "b", "sure": 2}):
        path.write_text(json.dumps(bad))
        with pytest.raises(ContractError, match="auto.json"):
            load_rule(path)
    path.write_text("{not json")
    with pytest.raises(ContractError, match="not readable JSON"):
        load_rule(path)


def _captcha(seed=3):
    from captchalens.training.generate import GenSpec, draw

    im, text = draw(GenSpec(), seed, 0)
    return np.asarray(im.convert("RGBA")), text


@pytest.mark.parametrize("sure, answers", [(0.0, "default"), (1.0, "tiny")])
def test_the_host_auto_reader_asks_default_then_the_other_model(tmp_path, default_model_dir, tiny_model,
                                                                 sure, answers, monkeypatch):
    from captchalens.native_host.registry import Registry

    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path / "home"))
    rule = save_rule(AutoRule("default", "tiny", sure), tmp_path / "auto.json")
    registry = Registry([default_model_dir, tiny_model], fixed_source="package", rule_file=rule).reload()
    assert registry.default == "auto" and registry.names() == ["default", "tiny", "auto"]
    rgba, _ = _captcha()
    got = registry.entries["auto"].runner.solve(rgba)
    assert got == registry.entries[answers].runner.solve(rgba)
    described = {m["name"]: m for m in registry.describe()["models"]}
    assert described["auto"]["auto"]["first"] == "default" and described["auto"]["charset"] == described["tiny"]["charset"]


def test_no_auto_reader_for_models_the_user_named(tmp_path, default_model_dir, tiny_model, monkeypatch):
    from captchalens.native_host.registry import Registry

    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path / "home"))
    rule = save_rule(AutoRule("default", "tiny", 0.5), tmp_path / "auto.json")
    registry = Registry([default_model_dir, tiny_model], fixed_source="cli", rule_file=rule).reload()
    assert "auto" not in registry.names() and registry.default == "default"
    missing = Registry([default_model_dir], fixed_source="package", rule_file=rule).reload()
    assert "auto" not in missing.names() and missing.default == "default"  # its second model is absent


@pytest.mark.parametrize("sure", [0.0, 0.5, 1.0])
def test_the_python_auto_solver_answers_each_image_with_the_model_the_rule_picks(default_model_dir, tiny_model,
                                                                                 sure):
    from captchalens.auto import AutoSolver
    from captchalens.solver import get_solver
    from captchalens.training.generate import GenSpec, generate

    images, _ = generate(GenSpec(width=(100, 220), height=(40, 80)), 24, seed=5, workers=1, progress=False)
    got = AutoSolver(AutoRule("default", "tiny", sure), default_model_dir, tiny_model).solve_named(images)
    first, then = get_solver(default_model_dir).solve_images(images), get_solver(tiny_model).solve_images(images)
    for (text, conf, name), f, t in zip(got, first, then):
        assert (name, (text, conf)) == (("default", f) if f[1] >= sure else ("tiny", t))
    if sure in (0.0, 1.0):  # the two ends: one model answers everything
        assert {n for _, _, n in got} == {"default" if sure == 0.0 else "tiny"}


def test_a_sites_alphabet_the_first_model_cannot_read_goes_straight_to_the_other(tmp_path, default_model_dir,
                                                                                 tiny_model, monkeypatch):
    """The default model reads 0-9a-z: on a site of capitals it can never be right, so the
    automatic reader asks the other model at once, in Python and on the host; on a site of
    digits both read digits only, and the first answers as its rule says."""
    from captchalens.auto import AutoSolver
    from captchalens.native_host.registry import Registry
    from captchalens.solver import get_solver
    from captchalens.training.generate import GenSpec, generate

    images, _ = generate(GenSpec(width=(100, 220), height=(40, 80)), 8, seed=6, workers=1, progress=False)
    auto = AutoSolver(AutoRule("default", "tiny", 0.0), default_model_dir, tiny_model)  # the first always stands
    assert "A" not in auto.first.meta.charset
    capitals = auto.solve_named(images, "QXZ")
    assert capitals == [(t, c, "tiny") for t, c in get_solver(tiny_model).solve_images(images, "QXZ")]
    digits = auto.solve_named(images, "42")
    assert digits == [(t, c, "default") for t, c in get_solver(default_model_dir).solve_images(images, "42")]
    assert all(t.isdigit() for t, _, _ in digits) and not all(t.isdigit() for t, _, _ in auto.solve_named(images))

    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path / "home"))
    rule = save_rule(AutoRule("default", "tiny", 0.0), tmp_path / "auto.json")
    registry = Registry([default_model_dir, tiny_model], fixed_source="package", rule_file=rule).reload()
    for im, (text, conf, _) in zip(images[:3], capitals):
        assert registry.entries["auto"].runner.solve(im, "QXZ") == (text, conf)
    for im, (text, conf, _) in zip(images[:3], digits):
        assert registry.entries["auto"].runner.solve(im, "42") == (text, conf)


def test_solve_with_auto_and_no_rule_says_so(tmp_path, monkeypatch, capsys):
    import captchalens.auto as auto
    from captchalens.cli import main
    from captchalens.training.generate import GenSpec, draw

    monkeypatch.setattr(auto, "RULE_FILE", tmp_path / "auto.json")  # a package without the rule
    draw(GenSpec(), 1, 0)[0].save(tmp_path / "c.png")
    assert main(["solve", "--model", "auto", str(tmp_path / "c.png")]) == 1
    assert capsys.readouterr().err.strip() == (f"captchalens: error: {tmp_path / 'auto.json'} is missing: "
                                               f"this package has no automatic reader")
