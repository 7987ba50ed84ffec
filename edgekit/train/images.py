"""Image folders for training: every file checked before a step runs.

Training sets are collected by hand and often hold a stray `.txt`, a `.DS_Store` or a truncated
download. Unreadable files are skipped with one warning that lists them (training on the rest is
what the user wants), and a folder with nothing readable left is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError

# Files named in a warning before "... and N more".
MAX_SKIPPED_NAMED = 5


class ImageFolderError(EdgekitError):
    exit_code = 2


@dataclass(frozen=True)
class ImageFolder:
    images: list[Path]  # sorted, readable by Pillow
    skipped: list[Path]  # files Pillow cannot read

    def skipped_warning(self, role: str) -> str | None:
        """One line listing the skipped files, or None."""
        if not self.skipped:
            return None
        names = [str(p) for p in self.skipped[:MAX_SKIPPED_NAMED]]
        more = len(self.skipped) - len(names)
        listed = ", ".join(names) + (f" and {more} more" if more else "")
        return f"skipped {len(self.skipped)} unreadable file(s) in the {role} folder: {listed}"


def read_image_folder(folder: Path, role: str, *, recursive: bool = False) -> ImageFolder:
    """The readable images in `folder` (`role` names it in messages: 'instance', 'class')."""
    from PIL import Image, UnidentifiedImageError

    if not folder.is_dir():
        raise ImageFolderError(
            f"The {role} image folder '{folder}' does not exist or is not a folder.",
            hint="pass a folder of photos (JPEG, PNG, ...).",
        )
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(
        p
        for p in candidates
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    images, skipped = [], []
    for path in files:
        try:
            with Image.open(path) as image:
                image.verify()  # header and structure only: cheap, no full decode
            images.append(path)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            skipped.append(path)
    if not images:
        found = f" ({len(skipped)} file(s), none an image)" if skipped else ""
        raise ImageFolderError(
            f"The {role} image folder '{folder}' holds no readable images{found}.",
            hint="put the photos (JPEG, PNG, ...) in it.",
        )
    return ImageFolder(images=images, skipped=skipped)
