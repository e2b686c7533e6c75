"""The broad renderer (training/render.py): seeded, varied, honest about held-out fonts,
and usable by the one training loop (a mixed generated set trains a general CTC model)."""
import numpy as np
import pytest

from captchalens.training import render
from captchalens.training.generate import generate
from captchalens.training.render import GENERAL_CHARSET, HELD_OUT, RenderSpec, draw


def _grey(im):
    return np.asarray(im.convert("L"), np.float32)


def test_rendering_is_seeded_and_independent_of_workers_and_chunks():
    spec = RenderSpec()
    a_img, a_txt = generate(spec, 10, seed=3, workers=1, progress=False)
    b_img, b_txt = generate(spec, 10, seed=3, workers=1, progress=False, chunk=3)
    c_img, c_txt = generate(spec, 10, seed=4, workers=1, progress=False)
    assert a_txt == b_txt and all(np.array_equal(x, y) for x, y in zip(a_img, b_img))
    assert a_txt != c_txt


def test_the_mix_covers_lengths_cases_sizes_and_both_polarities():
    samples = [draw(RenderSpec(), 1, i) for i in range(200)]
    texts = [t for _, t in samples]
    assert {len(t) for t in texts} == set(range(3, 9))
    joined = "".join(texts)
    assert set(joined) <= set(GENERAL_CHARSET)
    assert any(c.isupper() for c in joined) and any(c.islower() for c in joined)
    assert any(c.isdigit() for c in joined)
    sizes = [im.size for im, _ in samples]
    assert min(w for w, _ in sizes) >= 60 and max(w for w, _ in sizes) <= 300
    assert min(h for _, h in sizes) >= 20 and max(h for _, h in sizes) <= 100
    assert len(set(sizes)) > 50
    # Light on dark as well as dark on light: the mean grey of the image says which.
    means = [_grey(im).mean() for im, _ in samples]
    assert sum(m < 100 for m in means) >= 20 and sum(m > 160 for m in means) >= 80


def test_held_out_font_families_never_draw_the_training_mix(monkeypatch):
    used = set()
    real = render._font

    def spy(path, size):
        used.add(path)
        return real(path, size)

    monkeypatch.setattr(render, "_font", spy)
    for i in range(150):
        draw(RenderSpec(), 2, i)
    held = {p for fam in render.fonts(True).values() for p in fam}
    assert held, "the held-out font families are installed (make fonts)"
    assert used and not used & held
    families = {p.split("/")[-2] for p in used}
    assert len(families) >= 15  # many families, not one


@pytest.mark.parametrize("scheme", sorted(HELD_OUT))
def test_held_out_schemes_use_only_their_own_font_family(scheme, monkeypatch):
    used = set()
    real = render._font
    monkeypatch.setattr(render, "_font", lambda p, s: used.add(p) or real(p, s))
    spec = RenderSpec(scheme=scheme)
    out = [draw(spec, 1, i) for i in range(5)]
    fam = HELD_OUT[scheme]["family"]
    assert used and all(p.split("/")[-2] == fam for p in used)
    assert all(im.size == HELD_OUT[scheme]["size"] for im, _ in out)
    assert all(set(t) <= set(HELD_OUT[scheme]["alphabet"]) for _, t in out)


@pytest.mark.parametrize("advance", [1.0, 1.1, 1.25])
def test_no_glyph_is_cut_off_the_text_layer(advance):
    """With spacing at or above the glyphs' width, the text layer holds every
    opaque pixel of every glyph: a label naming a character that was cropped away
    would teach the model to see characters that are not there."""
    import random

    fam = render.fonts(False)
    path = fam[sorted(fam)[0]][0]
    p = {**render._mix_params(random.Random(1)), "advance": advance, "rotate": 0, "scale": 0.0,
         "jitter": 0.25, "style": "plain"}
    text = "KFUNJO"
    layer = render._text_layer(random.Random(2), text, [path] * len(text), [(0, 0, 0)] * len(text), 60, p,
                               (255, 255, 255))
    glyphs = [render._glyph(None, ch, path, 60, (0, 0, 0), 0, "plain", (255, 255, 255)) for ch in text]
    opaque = lambda im: int((np.asarray(im.getchannel("A")) > 0).sum())  # noqa: E731
    assert opaque(layer) == sum(opaque(g) for g in glyphs)


def test_missing_fonts_get_a_clear_error(monkeypatch):
    monkeypatch.setattr(render, "FONT_DIRS", ("/nonexistent-fonts",))
    render._all_fonts.cache_clear()
    try:
        with pytest.raises(render.FontsMissing, match="make fonts"):
            draw(RenderSpec(), 1, 0)
    finally:
        render._all_fonts.cache_clear()


def test_a_strike_through_runs_across_the_text_inside_its_band():
    import random

    from PIL import Image

    for i in range(20):
        im = Image.new("RGB", (200, 60), (255, 255, 255))
        box = (40, 15, 160, 45)
        render._strike(random.Random(i), im, box, (0, 0, 0), 2)
        ink = np.argwhere(_grey(im) < 128)
        assert ink[:, 1].min() <= 40 + 12 and ink[:, 1].max() >= 160 - 12  # the text's whole width
        assert ink[:, 0].min() >= 15 + 4 - 2 and ink[:, 0].max() <= 45 - 4 + 2  # inside its band


@pytest.mark.parametrize("radius", [1, 2])
def test_scattered_edges_move_ink_by_at_most_the_radius_and_keep_most_of_it(radius):
    import random

    fam = render.fonts(False)
    path = fam[sorted(fam)[0]][0]
    layer = render._glyph(None, "W", path, 60, (0, 0, 0), 0, "plain", (255, 255, 255))
    out = render._scatter(random.Random(0), layer, radius)
    a, b = np.asarray(layer.getchannel("A")) > 0, np.asarray(out.getchannel("A")) > 0
    ya, xa = np.nonzero(a)
    yb, xb = np.nonzero(b)
    assert ya.min() - radius <= yb.min() and yb.max() <= ya.max() + radius
    assert xa.min() - radius <= xb.min() and xb.max() <= xa.max() + radius
    assert not np.array_equal(a, b)  # the edges did change
    assert 0.6 < b.sum() / a.sum() < 1.4


def test_a_new_drawing_version_never_reads_an_older_cache(monkeypatch):
    before = RenderSpec().key()
    monkeypatch.setattr(render, "RENDER_VERSION", render.RENDER_VERSION + 1)
    assert RenderSpec().key() != before


def test_the_mix_carries_strike_throughs_and_scattered_edges_the_held_out_schemes_do_not(monkeypatch):
    calls = {"strike": 0, "scatter": 0}
    for name in calls:
        real = getattr(render, f"_{name}")
        monkeypatch.setattr(render, f"_{name}", lambda *a, _r=real, _n=name: calls.__setitem__(_n, calls[_n] + 1) or _r(*a))
    for i in range(80):
        draw(RenderSpec(), 3, i)
    assert calls["strike"] >= 8 and calls["scatter"] >= 4
    calls.update(strike=0, scatter=0)
    for scheme in HELD_OUT:
        for i in range(10):
            draw(RenderSpec(scheme=scheme), 3, i)
    assert calls == {"strike": 0, "scatter": 0}


def test_a_third_of_the_mix_is_packed_text_whose_glyphs_touch():
    """Renderer version 3: packed captchas (large, touching glyphs, most with a line through them)
    are about a third of the mix, drawn from the extras stream the held-out schemes never read."""
    import random

    extras = [render._mix_extras(random.Random(f"render-extras:3:{i}")) for i in range(400)]
    packed = [e for e in extras if e["packed"]]
    assert 0.27 < len(packed) / len(extras) < 0.43
    assert all(e["advance"] < 0.8 and e["height"] >= 0.78 and e["fill"] >= 0.85 for e in packed)
    assert sum(e["strike"] for e in packed) / len(packed) > 0.45  # a line through most of them
    fam = render.fonts(False)
    path = fam[sorted(fam)[0]][0]
    text = "mnhwb8"
    glyphs = [render._glyph(None, ch, path, 60, (0, 0, 0), 0, "bold", (255, 255, 255)) for ch in text]
    ink = sum((lambda b: b[2] - b[0])(g.getchannel("A").getbbox()) for g in glyphs)

    def width(advance):
        p = {**render._mix_params(random.Random(1)), "advance": advance, "rotate": 0, "scale": 0.0,
             "jitter": 0.0, "style": "bold"}
        return render._text_layer(random.Random(2), text, [path] * len(text), [(0, 0, 0)] * len(text), 60, p,
                                  (255, 255, 255)).width

    assert width(0.6) <= ink < 0.8 * width(1.0)  # packed neighbours touch; spaced ones do not


def test_a_lead_line_starts_at_the_left_edge_and_runs_through_the_text_to_the_right():
    import random

    from PIL import Image

    for i in range(20):
        im = Image.new("RGB", (200, 60), (255, 255, 255))
        box = (40, 15, 150, 45)
        render._lead(random.Random(i), im, box, (0, 0, 0), 2)
        ink = np.argwhere(_grey(im) < 128)
        assert ink[:, 1].min() <= 0.04 * 200 + 2  # from the canvas's left edge
        assert ink[:, 1].max() >= 150  # past the text's right end
        inside = ink[(ink[:, 1] >= 40) & (ink[:, 1] <= 150)]
        assert inside[:, 0].min() >= 15 - 2 and inside[:, 0].max() <= 45 + 2  # through the text's band


@pytest.mark.parametrize("motion", [False, True])
def test_smeared_strokes_keep_the_layer_size_and_thicken_the_ink(motion):
    import random

    fam = render.fonts(False)
    path = fam[sorted(fam)[0]][0]
    layer = render._glyph(None, "n", path, 60, (0, 0, 0), 0, "plain", (255, 255, 255))
    out = render._smear(random.Random(0), layer, 3, 5, motion)
    a, b = np.asarray(layer.getchannel("A")) > 127, np.asarray(out.getchannel("A")) > 127
    assert out.size == layer.size
    assert b.sum() > 1.15 * a.sum()  # thicker strokes
    assert np.array_equal(np.asarray(out)[..., :3][b].max(0), [0, 0, 0])  # still the text's colour


def test_version_4_smears_ramps_and_leads_part_of_the_mix_and_never_a_held_out_scheme(monkeypatch):
    import random

    v4 = [render._mix_v4(random.Random(f"render-v4:3:{i}")) for i in range(1000)]
    assert 0.15 < sum(bool(e["smear"]) for e in v4) / 1000 < 0.25
    assert 0.08 < sum(e["ramp"] for e in v4) / 1000 < 0.16
    assert 0.15 < sum(e["lead"] for e in v4) / 1000 < 0.25
    calls = {"smear": 0, "lead": 0, "ramp": 0}
    for name in calls:
        real = getattr(render, f"_{name}")
        monkeypatch.setattr(render, f"_{name}", lambda *a, _r=real, _n=name: calls.__setitem__(_n, calls[_n] + 1) or _r(*a))
    for i in range(80):
        draw(RenderSpec(), 3, i)
    assert calls["smear"] >= 6 and calls["lead"] >= 6 and calls["ramp"] >= 3
    calls.update(smear=0, lead=0, ramp=0)
    for scheme in HELD_OUT:
        for i in range(10):
            draw(RenderSpec(scheme=scheme), 3, i)
    assert calls == {"smear": 0, "lead": 0, "ramp": 0}


def test_a_ramp_is_a_light_background_brightening_steadily_to_one_side():
    import random

    for i in range(20):
        g = _grey(render._ramp(random.Random(i), 120, 30))
        cols = g.mean(0)
        assert g.min() >= 130 and np.allclose(g, cols[None], atol=1)  # light; one level per column
        d = np.diff(cols)
        assert (d >= -1).all() or (d <= 1).all()  # monotone
        assert abs(cols[-1] - cols[0]) > 10
