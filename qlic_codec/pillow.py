"""A Pillow plugin: ``Image.open("photo.qlic")`` and ``im.save("photo.qlic", quality=5)``.

    import qlic_codec.pillow  # registers the QLIC format with Pillow
    from PIL import Image
    with Image.open("photo.qlic") as im:     # reads only the header: size and mode
        im.thumbnail((256, 256))             # decodes on first use of the pixels
    Image.open("photo.png").save("photo.qlic", quality=5, model="msssim")

Opening is lazy, as with Pillow's own formats: ``Image.open`` reads the header (82 bytes and
the metadata chunks) for the size, mode, quality and metadata, and the integer decoder runs
in ``load()``, which also checks the file's CRCs. Pillow's decompression-bomb check applies
to the header's size before anything is decoded. The metadata is in ``im.info`` as Pillow's
own formats put it: ``icc_profile``, ``exif`` (with the ``Exif\0\0`` prefix, so
``im.getexif()`` reads it) and ``xmp``; ``quality`` is a number (5, or 4.5).

Saving takes ``quality`` (a number from 1 to the model's top level, default 4; 4.5 is
fine), ``model`` (a bundled name or a model file), and ``icc_profile``, ``exif`` (bytes or
an ``Image.Exif``) and ``xmp``, which default to the image's own ``im.info`` (so
``Image.open("a.jpg").save("a.qlic")`` carries them, as ``qlic encode`` does). RGB is written
as it is; greyscale, bilevel and palette images without transparency are converted to RGB,
as ``qlic encode`` does; images with an alpha channel are refused (convert them to RGB
first, deciding what the transparent pixels become).
"""

from PIL import Image, ImageFile

from . import container
from .errors import QlicError
from .metadata import EXIF_PREFIX, Metadata

FORMAT = "QLIC"
_CONVERTIBLE = {"1", "L", "P", "I;16", "I;16L", "I;16B", "I", "F", "CMYK", "YCbCr", "LAB", "HSV"}


def _accept(prefix: bytes) -> bool:
    return prefix[:4] == container.MAGIC


class QlicImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "qlic learned image codec"

    def _open(self) -> None:
        start = self.fp.tell()
        head = self.fp.read(container.MAX_TABLES_SIZE)
        try:
            # The tables say how long the header is (chunks included, at most 3 x 16 MiB).
            size = container.header_size(head)
            if size > len(head):
                head += self.fp.read(size - len(head))
            # Pillow's own decompression-bomb check applies to the size set here.
            header = container.read_header(head, max_pixels=2**62)
        except QlicError as exc:
            raise SyntaxError(f"not a valid qlic file: {exc}") from None
        self._size = (header.width, header.height)
        self._mode = "RGB"
        self._qlic_start = start
        self._qlic_loaded = False
        self.info["quality"] = header.quality
        self.info["metric"] = header.metric
        self.info["model_hash"] = header.model_hash.hex()
        metadata = Metadata.from_chunks(header.chunks)
        if metadata.icc is not None:
            self.info["icc_profile"] = metadata.icc
        if metadata.exif is not None:
            self.info["exif"] = EXIF_PREFIX + metadata.exif
        if metadata.xmp is not None:
            self.info["xmp"] = metadata.xmp
        self.tile = []

    def load(self):
        if not self._qlic_loaded:
            from . import api
            self.fp.seek(self._qlic_start)
            data = self.fp.read()
            try:
                rgb = api.decode(data, max_pixels=max(1, self.size[0] * self.size[1]))
            except QlicError as exc:
                raise OSError(f"cannot decode qlic image: {exc}") from None
            self.load_prepare()
            self.frombytes(rgb.tobytes())
            self._qlic_loaded = True
            if self._exclusive_fp:
                self.fp.close()
            self.fp = None
        return super().load()


def _save(im: Image.Image, fp, filename) -> None:
    from . import api
    info = getattr(im, "encoderinfo", {})  # set on the image being saved, not on a conversion
    source = im
    if im.mode != "RGB":
        if im.mode not in _CONVERTIBLE or (im.mode == "P" and "transparency" in im.info):
            raise OSError(f"cannot write mode {im.mode} as {FORMAT}: convert it to RGB first")
        im = im.convert("RGB")
    quality = info.get("quality", api.DEFAULT_QUALITY)
    try:
        metadata = _metadata(info, source.info)
        data = api.encode(_pixels(im), quality=quality, model=info.get("model"),
                          metadata=metadata)
    except QlicError as exc:
        raise OSError(f"cannot write {FORMAT}: {exc}") from None
    fp.write(data)


def _metadata(encoderinfo: dict, info: dict) -> Metadata:
    """The metadata to write: the save call's arguments, else the image's own."""
    def pick(key):
        value = encoderinfo.get(key, info.get(key))
        if isinstance(value, Image.Exif):
            value = value.tobytes()
        if isinstance(value, str):  # XMP as text
            value = value.encode("utf-8")
        return value

    return Metadata(icc=pick("icc_profile"), exif=pick("exif"), xmp=pick("xmp"))


def _pixels(im: Image.Image):
    import numpy as np
    return np.asarray(im, dtype=np.uint8)


Image.register_open(FORMAT, QlicImageFile, _accept)
Image.register_save(FORMAT, _save)
Image.register_extension(FORMAT, ".qlic")
Image.register_mime(FORMAT, "image/x-qlic")
