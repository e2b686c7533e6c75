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
