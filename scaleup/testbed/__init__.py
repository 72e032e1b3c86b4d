"""The testbed: a small Stable Diffusion trained by fairdiff on real bundled data, with a learned ink-colour bias.

No Stable Diffusion weights exist on machines without a model hub, so this model stands in for them: it has exactly
SD 1.5's component types (``AutoencoderKL``, ``CLIPTextModel`` + ``CLIPTokenizer``, ``UNet2DConditionModel``,
``DPMSolverMultistepScheduler``) and is a ``StableDiffusionPipeline`` folder, so every scale-up job runs on it as it
would on SD. It draws scikit-learn's handwritten digits in red or blue ink, with a per-digit skew it learned from
its data (:mod:`.data`); :mod:`.classifiers` holds the training, evaluation and content classifiers; the card
(:mod:`.card`) lists the attribute, the prompts and the data's skew. The committed folder is
:func:`~scaleup.testbed.paths.testbed_path`; ``python -m scaleup.testbed`` rebuilds it (:mod:`.build`).
"""

from scaleup.testbed.paths import TESTBED_NAME, testbed_path

__all__ = ["TESTBED_NAME", "testbed_path"]
