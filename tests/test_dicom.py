"""DICOM (Ophthalmic Photography) input: files built with pydicom, read through engine.load_image."""
import io
import warnings

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from engine import VisionCLIPError, load_image
from engine.dicom import is_dicom, read_dicom
from engine import load_image_with_meta
from visionclip_app.uploads import UploadNames

from .conftest import make_fundus

OPHTHALMIC_PHOTOGRAPHY_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"


def _dataset(rows, cols, samples, photometric, transfer=ExplicitVRLittleEndian, bits=8, **extra) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = OPHTHALMIC_PHOTOGRAPHY_8BIT
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = OPHTHALMIC_PHOTOGRAPHY_8BIT, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OP"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "MRN123", "19600101"  # must never come out
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, samples, photometric
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds


def write_dicom(path, arr: np.ndarray, photometric="RGB", bits=8, frames=1, **extra):
    """Uncompressed DICOM; ``arr`` is (H, W, 3) or (H, W), repeated ``frames`` times."""
    samples = 3 if arr.ndim == 3 else 1
    ds = _dataset(arr.shape[0], arr.shape[1], samples, photometric, bits=bits, **extra)
    if frames > 1:
        ds.NumberOfFrames = frames
        arr = np.stack([arr] + [np.zeros_like(arr)] * (frames - 1))  # later frames black: the first must be used
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_jpeg_dicom(path, rgb: np.ndarray, **extra):
    """JPEG baseline (1.2.840.10008.1.2.4.50): Pillow encodes the frame, pydicom encapsulates it."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95)
    ds = _dataset(rgb.shape[0], rgb.shape[1], 3, "YBR_FULL_422", transfer=JPEGBaseline8Bit, **extra)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def fundus_rgb():
    return np.asarray(make_fundus((96, 80)))


def test_uncompressed_rgb_reads_exactly(tmp_path, fundus_rgb):
    path = write_dicom(tmp_path / "eye.dcm", fundus_rgb)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (96, 80)
    assert np.array_equal(np.asarray(img), fundus_rgb)


def test_ybr_full_is_converted_to_rgb(tmp_path, fundus_rgb):
    ybr = convert_color_space(fundus_rgb, "RGB", "YBR_FULL")
    path = write_dicom(tmp_path / "eye.dcm", ybr, photometric="YBR_FULL")
    got = np.asarray(load_image(path)).astype(int)
    assert np.abs(got - fundus_rgb.astype(int)).max() <= 3  # YCbCr round trip in 8 bits


def test_jpeg_baseline_is_decoded_to_rgb(tmp_path, fundus_rgb):
    path = write_jpeg_dicom(tmp_path / "eye.dcm", fundus_rgb)
    got = np.asarray(load_image(path)).astype(float)
    assert got.shape == fundus_rgb.shape
    assert np.abs(got - fundus_rgb).mean() < 6  # lossy, but the same picture in the same colours
    r, g, b = (got[..., c][fundus_rgb[..., 0] > 100].mean() for c in range(3))
    assert r > g > b  # an orange fundus stays orange (no YCbCr read as RGB)


def test_monochrome2_and_monochrome1_become_grey_rgb(tmp_path):
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1))  # (16, 64) ramp
    img = np.asarray(load_image(write_dicom(tmp_path / "m2.dcm", grey, photometric="MONOCHROME2")))
    assert img.shape == (16, 64, 3) and np.array_equal(img[..., 0], grey) and np.array_equal(img[..., 2], grey)
    inverted = np.asarray(load_image(write_dicom(tmp_path / "m1.dcm", grey, photometric="MONOCHROME1")))
    assert np.array_equal(inverted[..., 1], 255 - grey)  # MONOCHROME1: the minimum is white


def test_12_bit_monochrome_is_scaled_to_8_bits(tmp_path):
    grey = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (16, 1))
    img = np.asarray(load_image(write_dicom(tmp_path / "m12.dcm", grey, photometric="MONOCHROME2", bits=12)))
    assert img[0, 0, 0] == 0 and img[0, -1, 0] == 255 and 120 < img[0, 32, 0] < 136


def test_laterality_and_frames_as_metadata_never_patient_attributes(tmp_path, fundus_rgb):
    path = write_dicom(tmp_path / "eye.dcm", fundus_rgb, ImageLaterality="L")
    img, meta = load_image_with_meta(path)
    assert meta == {"laterality": "L"}
    _, meta = load_image_with_meta(write_dicom(tmp_path / "series.dcm", fundus_rgb, Laterality="R"))
    assert meta == {"laterality": "R"}
    _, meta = load_image_with_meta(write_dicom(tmp_path / "none.dcm", fundus_rgb, ImageLaterality="U"))
    assert meta == {}  # unpaired: no eye side
    assert load_image_with_meta(make_fundus())[1] == {}  # other formats: nothing


def test_multi_frame_uses_the_first_frame_with_a_note(tmp_path, fundus_rgb):
    path = write_dicom(tmp_path / "cine.dcm", fundus_rgb, frames=3)
    with pytest.warns(UserWarning, match="3 frames; the first is used"):
        img, meta = load_image_with_meta(path)
    assert meta == {"frames": 3}
    assert np.array_equal(np.asarray(img), fundus_rgb)  # not the black later frames


def test_dicom_found_by_magic_from_bytes_file_objects_and_extensionless_files(tmp_path, fundus_rgb):
    path = write_dicom(tmp_path / "IM0001", fundus_rgb)  # cameras often write no extension
    data = path.read_bytes()
    assert is_dicom(path) and is_dicom(data) and not is_dicom(b"\x89PNG" + b"\0" * 200)
    for source in (path, data, io.BytesIO(data)):
        assert np.array_equal(np.asarray(load_image(source)), fundus_rgb)


def test_broken_dicom_files_are_one_line_errors(tmp_path, fundus_rgb):
    good = write_dicom(tmp_path / "good.dcm", fundus_rgb).read_bytes()
    jpeg = write_jpeg_dicom(tmp_path / "good_jpeg.dcm", fundus_rgb).read_bytes()
    cases = {
        "truncated.dcm": (good[: len(good) - 5000], "cannot decode DICOM pixel data"),
        "truncated_jpeg.dcm": (jpeg[: len(jpeg) // 2], "no pixel data .truncated"),
        "corrupt_jpeg.dcm": (jpeg[: jpeg.find(b"\xff\xd8")] + b"\0" * 40 + jpeg[jpeg.find(b"\xff\xd8") + 40:],
                             "cannot decode DICOM pixel data .Unable to decode"),
        "garbled.dcm": (good[:132] + b"\xff" * 300, "no pixel data"),
        "notes.dcm": (b"this is a text file, not DICOM\n" * 10, "not a DICOM file"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(VisionCLIPError, match=message) as e:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's own warnings about the damage
                load_image(tmp_path / name)
        assert "\n" not in str(e.value) and str(e.value).startswith(name)


def test_dicom_without_pixels_and_too_large_are_refused_before_decoding(tmp_path, fundus_rgb):
    ds = _dataset(80, 96, 3, "RGB")
    ds.save_as(tmp_path / "header_only.dcm", enforce_file_format=True)
    with pytest.raises(VisionCLIPError, match="no pixel data"):
        load_image(tmp_path / "header_only.dcm")
    ds.Rows, ds.PixelData = 1000, fundus_rgb.tobytes()  # the header promises more pixels than the file has
    ds.save_as(tmp_path / "short.dcm", enforce_file_format=True)
    with pytest.raises(VisionCLIPError, match="cannot decode DICOM pixel data"):
        load_image(tmp_path / "short.dcm")
    with pytest.raises(VisionCLIPError, match="too large"):
        read_dicom(write_dicom(tmp_path / "eye.dcm", fundus_rgb), max_pixels=1000, name="eye.dcm")


def test_app_upload_keeps_the_dicom_extension():
    names = UploadNames()
    neutral = names.neutral_name("Jane_Doe_OD.dcm")
    assert neutral.endswith(".dcm") and "Jane" not in neutral
    assert names.neutral_name("x.DICOM").endswith(".dicom")


def test_palette_colour_is_looked_up(tmp_path):
    index = np.tile(np.arange(64, dtype=np.uint8), (16, 1))  # (16, 64): entries 0..63
    ds = _dataset(16, 64, 1, "PALETTE COLOR")
    lut = np.arange(256, dtype=np.uint16) * 257  # 16-bit entries
    for colour, values in (("Red", lut), ("Green", lut[::-1].copy()), ("Blue", np.zeros(256, np.uint16))):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", values.tobytes())
    ds.PixelData = index.tobytes()
    ds.save_as(tmp_path / "palette.dcm", enforce_file_format=True)
    rgb = np.asarray(load_image(tmp_path / "palette.dcm"))
    assert rgb.shape == (16, 64, 3)
    assert np.array_equal(rgb[0, :, 0], np.arange(64)) and np.array_equal(rgb[0, :, 1], 255 - np.arange(64))
    assert not rgb[..., 2].any()
