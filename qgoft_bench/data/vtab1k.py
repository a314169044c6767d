"""VTAB-1k: the 19 tasks, their folder names, class counts and groups."""

# folder name -> number of classes, in the papers' column order (Natural 7, Specialized 4, Structured 8).
VTAB_TASKS: dict[str, int] = {
    "cifar": 100,
    "caltech101": 102,
    "dtd": 47,
    "oxford_flowers102": 102,
    "oxford_iiit_pet": 37,
    "svhn": 10,
    "sun397": 397,
    "patch_camelyon": 2,
    "eurosat": 10,
    "resisc45": 45,
    "diabetic_retinopathy": 5,
    "clevr_count": 8,
    "clevr_dist": 6,
    "dmlab": 6,
    "kitti": 4,
    "dsprites_loc": 16,
    "dsprites_ori": 16,
    "smallnorb_azi": 18,
    "smallnorb_ele": 9,
}

_names = list(VTAB_TASKS)
VTAB_GROUPS: dict[str, list[str]] = {
    "natural": _names[:7],
    "specialized": _names[7:11],
    "structured": _names[11:],
}
