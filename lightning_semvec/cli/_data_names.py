"""Short names of the package's data modules, for ``--data glyphs`` on every command."""

from __future__ import annotations

#: Short name -> import path.
DATA_MODULES = {
    "digits": "lightning_semvec.data.DigitsDataModule",
    "glyphs": "lightning_semvec.data.GlyphsDataModule",
    "mnist": "lightning_semvec.data.MNISTDataModule",
    "cifar10": "lightning_semvec.data.CIFAR10DataModule",
    "cifar100": "lightning_semvec.data.CIFAR100DataModule",
}


def expand_data_names(args: list[str]) -> list[str]:
    """``args`` with ``--data SHORT`` (or ``--data=SHORT``) replaced by the data module's
    import path, so that jsonargparse resolves it as it does a class name.

    Example:
        >>> expand_data_names(["fit", "--data", "glyphs", "--data.batch_size", "32"])
        ['fit', '--data', 'lightning_semvec.data.GlyphsDataModule', '--data.batch_size', '32']
    """
    expanded = list(args)
    for index, arg in enumerate(expanded):
        if arg == "--data" and index + 1 < len(expanded) and expanded[index + 1] in DATA_MODULES:
            expanded[index + 1] = DATA_MODULES[expanded[index + 1]]
        elif arg.startswith("--data=") and arg[len("--data="):] in DATA_MODULES:
            expanded[index] = "--data=" + DATA_MODULES[arg[len("--data="):]]
    return expanded
