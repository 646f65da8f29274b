"""One-line errors from Hydra's and OmegaConf's multi-line messages, and failure reasons."""

from __future__ import annotations

from greenai.errors import failure_reason, one_line


def test_an_unknown_option_names_the_group_and_the_choices():
    text = "Could not find 'model/resnet'\n\nAvailable options in 'model':\n\tdenselinear\n\tdensepoly\n\tsimplecnn\n"
    assert one_line(Exception(text)) == "model=resnet: unknown model; choose one of denselinear, densepoly, simplecnn"


def test_a_launcher_whose_plugin_is_not_installed_says_which_extra_brings_it():
    unknown = "Could not find 'hydra/launcher/joblib'\n\nAvailable options in 'hydra/launcher':\n\tbasic\n\tfused\n"
    assert one_line(Exception(unknown)) == (
        "hydra/launcher=joblib: unknown hydra/launcher; choose one of basic, fused "
        "(joblib is Hydra's plugin: pip install 'greenai[joblib]')"
    )
    ready = "In 'hydra/launcher/local': Could not load 'hydra/launcher/submitit_local'."
    assert one_line(Exception(ready)) == (
        "hydra/launcher=local: needs the hydra/launcher submitit_local, not installed here "
        "(submitit_local is Hydra's plugin: pip install 'greenai[slurm]')"
    )


def test_a_failure_reason_is_the_type_and_the_first_line():
    assert failure_reason(ValueError("loss became nan\nmore")) == "ValueError: loss became nan"
    assert failure_reason(KeyboardInterrupt()) == "KeyboardInterrupt"
