"""PopAlign on Stable Diffusion 1.5 and SDXL (seed 001, Sec. 3.1, 3.3 eq. 9, 5.1-5.4, App. A-C, E, H, L).

Three stages, each a subcommand of ``accelerate launch -m scaleup.jobs.popalign {generate,build-sets,train}``:

1. ``generate`` (:mod:`.generation`): M images per identity-neutral prompt and m per identity-augmented prompt
   (:mod:`.keywords`), seeded per image, resumable, sharded over processes.
2. ``build-sets`` (:mod:`.sanity`, :mod:`.sets`, :mod:`.dataset_card`): the sanity filter (face detector +
   attribute classifier), winning sets of N augmented images matching a target distribution, losing sets of N
   neutral images, the neutral prompt as caption; written as an imagefolder dataset (PNG + ``metadata.jsonl``).
3. ``train`` (:mod:`.preference_data`, :mod:`.conditioning`, :mod:`.step`, :mod:`.train`): the per-sample loss
   ``theory.popalign.popalign_loss`` of eq. 9 with r from ``theory.popalign.diffusion_log_ratio`` (or the SFT
   baseline ``theory.denoising.denoising_loss`` on the winners), full U-Net or LoRA, through the shared
   ``scaleup.training`` loop.

No formula is written here: every loss and metric is imported from :mod:`theory`.
"""
