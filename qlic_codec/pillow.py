"""A Pillow plugin: ``Image.open("photo.qlic")`` and ``im.save("photo.qlic", quality=5)``.

    import qlic_codec.pillow  # registers the QLIC format with Pillow
    from PIL import Image
    with Image.open("photo.qlic") as im:     # reads only the header: size and mode
        im.thumbnail((256, 256))             # decodes on first use of the pixels
    Image.open("photo.png").save("photo.qlic", quality=5, model="msssim")

Opening is lazy, as with Pillow's own formats: ``Image.open`` reads the header (at most 60
bytes) for the size and mode, and the integer decoder runs in ``load()``. Pillow's
decompression-bomb check applies to the header's size before anything is decoded.

Saving takes ``quality`` (a level of the model, default 4) and ``model`` (a bundled name or a
model file). RGB is written as it is; greyscale, bilevel and palette images without
transparency are converted to RGB, as ``qlic encode`` does; images with an alpha channel are
refused (convert them to RGB first, deciding what the transparent pixels become).
"""

from PIL import Image, ImageFile

from . import container
from .errors import QlicError

FORMAT = "QLIC"
_CONVERTIBLE = {"1", "L", "P", "I;16", "I;16L", "I;16B", "I", "F", "CMYK", "YCbCr", "LAB", "HSV"}


def _accept(prefix: bytes) -> bool:
    return prefix[:4] == container.MAGIC


class QlicImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "qlic learned image codec"

    def _open(self) -> None:
        start = self.fp.tell()
        head = self.fp.read(container.MAX_HEADER_SIZE)
        try:
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
    if im.mode != "RGB":
        if im.mode not in _CONVERTIBLE or (im.mode == "P" and "transparency" in im.info):
            raise OSError(f"cannot write mode {im.mode} as {FORMAT}: convert it to RGB first")
        im = im.convert("RGB")
    quality = info.get("quality", api.DEFAULT_QUALITY)
    try:
        data = api.encode(_pixels(im), quality=quality, model=info.get("model"))
    except QlicError as exc:
        raise OSError(f"cannot write {FORMAT}: {exc}") from None
    fp.write(data)


def _pixels(im: Image.Image):
    import numpy as np
    return np.asarray(im, dtype=np.uint8)


Image.register_open(FORMAT, QlicImageFile, _accept)
Image.register_save(FORMAT, _save)
Image.register_extension(FORMAT, ".qlic")
Image.register_mime(FORMAT, "image/x-qlic")
