"""The exact SynFundus-1M schema: what `visionclip synth` writes and what the `synfundus` source reads."""
import csv
import io
import platform
import warnings

import numpy as np
import pytest
from PIL import Image

from engine.errors import VisionCLIPError
from engine.synth.schema import (LABEL_COLUMNS, LEGACY_GENERATOR_VERSION, LabelSchemaWarning, check_header,
                                 labels_to_classes, normalise_labels, parse_condition, to_file_row)

# The real SynFundus-1M labels.csv header, verbatim, in its order.
REAL_HEADER = ["dr_grade", "eye_side", "is_amd", "is_aon", "is_crp", "is_dm", "is_dme", "is_em", "is_gc", "is_htr",
               "is_pm", "is_rvo", "is_fundus", "is_optic_disc_readable", "is_retinal_region_readable"]
# This project's files before the exact schema.
OLD_HEADER = ["idx", "dr_grade", "eye_side", "is_dme", "is_amd", "is_glaucoma", "is_pathologic_myopia",
              "is_hypertensive_retinopathy", "is_rvo", "is_erm", "is_optic_atrophy", "is_cataract", "is_fundus",
              "is_optic_disc_readable", "is_retina_readable", "quality_grade", "caption", "findings"]


def _row(header, **values):
    base = {c: 0 for c in header}
    base.update({"is_fundus": 1, "is_optic_disc_readable": 1, "is_retinal_region_readable": 1, "is_retina_readable": 1})
    base.update(values)
    return [base[c] for c in header]


def _folder(root, header, rows, names):
    """labels.csv plus one tiny PNG per name; image k is filled with grey level 10 * (k + 1)."""
    (root / "images").mkdir(parents=True)
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    for k, name in enumerate(names):
        Image.new("RGB", (8, 8), (10 * (k + 1),) * 3).save(root / "images" / f"{name}.png")
    return root


def _grey(src, i):
    return np.asarray(src.get(i)[0])[0, 0, 0]


@pytest.fixture
def real_folder(tmp_path):
    rows = [_row(REAL_HEADER, is_gc=1, eye_side=0),
            _row(REAL_HEADER, dr_grade=2, is_dm=1, is_dme=1, eye_side=1),
            _row(REAL_HEADER, is_pm=1, is_crp=1),
            _row(REAL_HEADER, is_dm=1)]  # diabetic without retinopathy: a normal fundus
    return _folder(tmp_path / "real", REAL_HEADER, rows, ["0", "1", "2", "3"])


def test_real_header_is_read_with_every_flag(real_folder):
    from engine.train.data import SynFundusFolder

    src = SynFundusFolder(str(real_folder))
    labels = [item[1] for item in src.items]
    assert [labels_to_classes(lab) for lab in labels] == [
        ["glaucoma"], ["diabetic retinopathy", "diabetic macular edema"],
        ["pathologic myopia", "central serous chorioretinopathy"], ["normal"]]
    assert [lab["is_dm"] for lab in labels] == [0, 1, 0, 1]
    assert [lab["eye_side"] for lab in labels[:2]] == ["right", "left"]  # 0 = right is the assumed default
    assert [_grey(src, i) for i in range(4)] == [10, 20, 30, 40]  # row k is image k.png
    flipped = SynFundusFolder(str(real_folder), eye_side_zero="left")
    assert [item[1]["eye_side"] for item in flipped.items[:2]] == ["left", "right"]


def test_images_counted_from_one_and_zero_padded_names(tmp_path):
    from engine.train.data import SynFundusFolder

    rows = [_row(REAL_HEADER, is_gc=1), _row(REAL_HEADER, is_htr=1)]
    src = SynFundusFolder(str(_folder(tmp_path / "a", REAL_HEADER, rows, ["0000001", "0000002"])))
    assert [labels_to_classes(it[1]) for it in src.items] == [["glaucoma"], ["hypertensive retinopathy"]]
    assert [_grey(src, i) for i in range(2)] == [10, 20]


def test_an_index_column_pairs_shuffled_rows_with_their_images(tmp_path):
    from engine.train.data import SynFundusFolder

    header = [""] + REAL_HEADER  # pandas writes its index under an empty name
    rows = [["2"] + _row(REAL_HEADER, is_em=1), ["0"] + _row(REAL_HEADER, is_aon=1)]
    src = SynFundusFolder(str(_folder(tmp_path / "a", header, rows, ["0", "1", "2"])))
    assert [labels_to_classes(it[1]) for it in src.items] == [["epiretinal membrane"], ["optic atrophy"]]
    assert [_grey(src, i) for i in range(2)] == [30, 10]


def test_old_project_files_still_read(tmp_path):
    from engine.train.data import SynFundusFolder

    rows = [_row(OLD_HEADER, idx="0000000", is_glaucoma=1, eye_side="left", quality_grade="usable",
                 caption="Glaucoma.", findings="[]"),
            _row(OLD_HEADER, idx="0000001", dr_grade=3, is_pathologic_myopia=1, is_retina_readable=0,
                 eye_side="right", quality_grade="good", caption="", findings="[]")]
    src = SynFundusFolder(str(_folder(tmp_path / "old", OLD_HEADER, rows, ["0000000", "0000001"])))
    a, b = (item[1] for item in src.items)
    assert labels_to_classes(a) == ["glaucoma"] and a["eye_side"] == "left" and a["quality_grade"] == "usable"
    assert labels_to_classes(b) == ["diabetic retinopathy", "pathologic myopia"]
    assert b["is_retina_readable"] == 0 and b["is_dm"] == 1  # is_dm follows from the DR grade
    assert src.get(0)[1] == "Glaucoma."  # the caption column is used


@pytest.mark.parametrize("drop", ["is_gc", "is_pm", "is_crp", "eye_side", "is_retinal_region_readable"])
def test_a_missing_column_is_a_one_line_error_naming_it(tmp_path, drop):
    from engine.train.data import SynFundusFolder

    header = [c for c in REAL_HEADER if c != drop]
    folder = _folder(tmp_path / "m", header, [_row(header)], ["0"])
    with pytest.raises(VisionCLIPError, match=f"lacks SynFundus-1M column.* {drop}") as e:
        SynFundusFolder(str(folder))
    assert "\n" not in str(e.value)


def test_an_unknown_column_is_a_named_warning(tmp_path):
    from engine.train.data import SynFundusFolder

    header = REAL_HEADER + ["is_macular_readable"]
    folder = _folder(tmp_path / "u", header, [_row(header, is_gc=1, is_macular_readable=1)], ["0"])
    with pytest.warns(LabelSchemaWarning, match="is_macular_readable"):
        src = SynFundusFolder(str(folder))
    assert labels_to_classes(src.items[0][1]) == ["glaucoma"]


def test_header_checks():
    with pytest.raises(VisionCLIPError, match="is_gc.*is_glaucoma|is_glaucoma.*is_gc"):
        check_header(REAL_HEADER + ["is_glaucoma"])  # two columns for one flag: which one counts?
    with pytest.raises(VisionCLIPError, match="dr_grade"):
        check_header([])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert set(check_header(LABEL_COLUMNS)) == set(LABEL_COLUMNS)  # our own header: no warning
        check_header(OLD_HEADER)  # older files may lack is_crp and is_dm
    with pytest.raises(VisionCLIPError, match="is_crp"):
        check_header([c for c in REAL_HEADER if c != "is_crp"])  # ...a real-format file may not


def test_bad_values_name_the_line_and_column(tmp_path):
    from engine.train.data import SynFundusFolder

    rows = [_row(REAL_HEADER), _row(REAL_HEADER, eye_side=2)]
    with pytest.raises(VisionCLIPError, match="line 3.*eye_side"):
        SynFundusFolder(str(_folder(tmp_path / "b", REAL_HEADER, rows, ["0", "1"])))
    with pytest.raises(VisionCLIPError, match="eye_side_zero"):
        SynFundusFolder(str(tmp_path / "b"), eye_side_zero="up")
    with pytest.raises(VisionCLIPError, match="is_gc"):
        normalise_labels({"is_gc": "2"})


def test_rows_and_classes_in_both_vocabularies():
    assert labels_to_classes({"dr_grade": 0, "is_gc": "1", "is_htr": 1}) == ["glaucoma", "hypertensive retinopathy"]
    assert labels_to_classes({"dr_grade": 1, "is_glaucoma": 1}) == ["diabetic retinopathy", "glaucoma"]
    r = normalise_labels(dict(zip(REAL_HEADER, _row(REAL_HEADER, is_em=1, eye_side="1"))))
    assert r["is_erm"] == 1 and r["eye_side"] == "left" and r["is_retina_readable"] == 1
    assert normalise_labels({"eye_side": "0"}, eye_side_zero="left")["eye_side"] == "left"
    assert parse_condition("central serous chorioretinopathy") == ("csc", None)
    assert parse_condition("CSR") == ("csc", None)


def test_file_row_order_diabetes_and_version():
    labels = {"dr_grade": 0, "eye_side": "left", "is_glaucoma": 1, "is_dme": 0, "is_crp": 1, "quality_grade": "usable",
              "is_fundus": 1, "is_optic_disc_readable": 0, "is_retina_readable": 1}
    row = dict(zip(LABEL_COLUMNS, to_file_row(labels, "A caption.", [{"name": "x"}], None, "4")))
    assert list(row)[:15] == REAL_HEADER
    assert list(row)[15:] == ["is_cataract", "quality_grade", "caption", "findings", "generator_version", "idx"]
    assert row["is_gc"] == 1 and row["is_crp"] == 1 and row["is_dm"] == 0 and row["eye_side"] == 1
    assert row["is_optic_disc_readable"] == 0 and row["is_retinal_region_readable"] == 1
    assert row["generator_version"] == LEGACY_GENERATOR_VERSION and row["idx"] == "4"
    dr = dict(zip(LABEL_COLUMNS, to_file_row({"dr_grade": 2, "eye_side": "left"}, eye_side_zero="left")))
    assert dr["is_dm"] == 1 and dr["eye_side"] == 0
    assert normalise_labels(row)["is_crp"] == 1 and labels_to_classes(normalise_labels(row)) == [
        "glaucoma", "central serous chorioretinopathy"]


def test_synth_writes_the_exact_schema_and_reads_back(tmp_path):
    from engine.synth import generate_dataset, render_fundus
    from engine.train.data import SynFundusFolder

    out = generate_dataset(tmp_path / "s", 4, seed=3, size=64, progress=False, eye_side_zero="left")
    with open(out / "labels.csv", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    assert header[:15] == REAL_HEADER and header == LABEL_COLUMNS
    assert [r[-1] for r in rows] == ["0", "1", "2", "3"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["0.png", "1.png", "2.png", "3.png"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src = SynFundusFolder(str(out), eye_side_zero="left")
    for i, (path, labels, findings, caption) in enumerate(src.items):
        s = render_fundus(3 + i, 64)
        assert path.name == f"{i}.png" and np.array_equal(np.asarray(Image.open(path)), s.image)  # PNG is lossless
        assert labels_to_classes(labels) == labels_to_classes(s.labels)
        assert labels["eye_side"] == s.labels["eye_side"] and labels["dr_grade"] == s.labels["dr_grade"]
        assert [f["name"] for f in findings] == [f["name"] for f in s.findings] and caption
        assert rows[i][header.index("generator_version")] == getattr(s, "generator_version", LEGACY_GENERATOR_VERSION)


def test_generator_version_comes_from_the_render(tmp_path, monkeypatch):
    from engine.synth import generate_dataset, writer

    real = writer.render_fundus

    def versioned(*a, **k):
        s = real(*a, **k)
        s.generator_version = "9.9-test"
        return s

    monkeypatch.setattr(writer, "render_fundus", versioned)
    out = generate_dataset(tmp_path / "v", 2, size=64, progress=False)
    rows = list(csv.DictReader(open(out / "labels.csv")))
    assert [r["generator_version"] for r in rows] == ["9.9-test", "9.9-test"]
    with pytest.raises(VisionCLIPError, match="eye_side_zero"):
        generate_dataset(tmp_path / "w", 1, size=64, progress=False, eye_side_zero="up")
    assert not (tmp_path / "w").exists()


def test_masks_pack_many_findings_into_bits_and_read_back(tmp_path):
    from engine.synth.writer import load_masks, masks_npz_bytes

    rng = np.random.default_rng(0)
    masks = {f"finding_{k:02d}": rng.random((9, 11)) < 0.3 for k in range(11)}  # more than 8: two bit planes
    path = tmp_path / "m.npz"
    path.write_bytes(masks_npz_bytes(masks))
    back = load_masks(path)
    assert back.keys() == masks.keys() and all(np.array_equal(back[k], masks[k]) for k in masks)
    assert masks_npz_bytes(masks) == masks_npz_bytes(dict(reversed(list(masks.items()))))  # deterministic bytes
    path.write_bytes(masks_npz_bytes({}))
    assert load_masks(path) == {}
    with np.load(io.BytesIO(masks_npz_bytes(masks))) as z:
        assert z["bits"].shape == (2, 9, 11) and z["bits"].dtype == np.uint8


@pytest.mark.parametrize("k", [1, 7, 8, 9, 17])
def test_mask_bit_planes_are_numpys_packbits(k):
    from engine.synth.writer import pack_mask_bits

    rng = np.random.default_rng(k)
    masks = [rng.random((13, 21)) < 0.4 for _ in range(k)]
    masks[0] = masks[0].astype(np.uint8) * 255  # any non-zero value is "in the mask"
    expected = np.packbits(np.stack([m.astype(bool) for m in masks]), axis=0)
    got = pack_mask_bits(masks)
    assert got.dtype == np.uint8 and got.shape == expected.shape and np.array_equal(got, expected)


def test_load_masks_reads_files_written_with_numpys_packbits(tmp_path):
    """Mask files written before the bit planes were built by shifting still load."""
    from engine.synth.writer import load_masks

    rng = np.random.default_rng(3)
    masks = {n: rng.random((10, 12)) < 0.3 for n in ("drusen", "hard_exudates", "microaneurysms")}
    names = sorted(masks)
    np.savez_compressed(tmp_path / "old.npz", names=np.array(names, dtype="U"),
                        bits=np.packbits(np.stack([masks[n] for n in names]), axis=0))
    back = load_masks(tmp_path / "old.npz")
    assert back.keys() == masks.keys() and all(np.array_equal(back[n], masks[n]) for n in names)


@pytest.mark.parametrize("shape", [(17, 23, 3), (17, 23)])
def test_png_bytes_is_lossless_rgb_png(shape):
    from engine.synth.writer import png_bytes

    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    data = png_bytes(img)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    back = Image.open(io.BytesIO(data))
    assert back.mode == ("RGB" if len(shape) == 3 else "L")  # channels not swapped: red stays red
    assert np.array_equal(np.asarray(back), img)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc tuning")
def test_writer_keeps_freed_image_buffers_in_the_heap():
    """After keep_freed_buffers, allocating and freeing render-sized arrays no longer page-faults them
    in anew (without it: ~2000 minor faults per round of the work below)."""
    import resource

    from engine.synth.writer import keep_freed_buffers

    def work():
        a = np.ones((512, 512, 3), np.float32)
        b = a * 2
        c = np.ones((256, 256, 3))
        del a, b, c

    keep_freed_buffers()
    work()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        work()
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10 < 100
