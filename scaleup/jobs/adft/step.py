"""One iteration of adjusted direct finetuning (seed 000, Algorithm A.1) with the loss of [0105]-[0109].

For the prompt P and the N initial noises z_T of the iteration (:mod:`.batch`), each process, on its N / P images:

1. original images o_i from the frozen model with the same noise (adapters disabled / no soft prompt, no gradient):
   their largest face, its class under each attribute's classifier, CLIP and DINOv2 embeddings ([0107], [0109]);
2. the finetuned images x_i through DPM-Solver++ with classifier-free guidance (the unconditional branch through the
   finetuned text encoder) and the adjusted gradient of Algorithm A.1 (:func:`scaleup.sampling.sample_latents`,
   checkpointed U-Net and VAE decode); faces detected on a detached copy, cropped differentiably, classified;
3. the classifier probabilities of the whole batch gathered from all processes, the DAL targets formed once
   (:mod:`.targets`, on the main process) and broadcast back: they are a property of the whole batch;
4. per sub-batch the loss L = L_align + lambda_img L_img + lambda_face L_face of :func:`theory.adft_loss.adft_loss`
   (dynamic lambda_img of [0109], face-region gradient scaling, L_face against the external faces), scaled by the
   sub-batch's share n / N of the batch, and its backward pass; the parts' gradients add up to the gradient of L over
   the whole batch (:mod:`theory.dal_parts`), summed over processes at the end.

When one sub-batch holds a process's images, step 2 runs once with gradient. Otherwise step 2 first runs without
gradient on all of them (the targets need every image before any backward pass) and again with gradient per
sub-batch, as the official code does; the images are the same both times (same noise, same model).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from theory.adft_loss import (AdftLossTerms, adft_loss, cosine_distance, dynamic_image_weights,
                              face_realism_distance, face_region_gradient, image_semantics_distance)
from theory.dal_parts import dal_cross_entropy
from theory.sampler_gradient import AdjustedGradient

from scaleup.jobs.adft.batch import IterationBatch, draw_batch
from scaleup.jobs.adft.components import Components
from scaleup.jobs.adft.config import AdftConfig, JobPlan
from scaleup.jobs.adft.profiling import NoTimer
from scaleup.jobs.adft.targets import BatchTargets, batch_targets
from scaleup.models.adapters import adapters_disabled
from scaleup.models.pipelines import default_size, latent_shape, seed_latents
from scaleup.models.soft_prompt import encode_with_soft_prompt
from scaleup.perception.crops import box_masks, crop_faces
from scaleup.perception.faces import FaceBoxes, find_faces
from scaleup.sampling import decode_latents, sample_latents


@dataclass
class Perception:
    """Faces and classifier logits of a sub-batch: logits rows are the images with a face, in batch order."""

    faces: FaceBoxes
    crops: torch.Tensor
    logits: dict[str, torch.Tensor]

    @property
    def face_index(self) -> torch.Tensor:
        return torch.nonzero(self.faces.found, as_tuple=False).flatten()

    def probabilities(self, n_classes: dict[str, int]) -> dict[str, np.ndarray]:
        """(n, K) float64 softmax per attribute, rows of images without a face uniform (ignored downstream)."""
        out = {}
        index = self.face_index.numpy()
        for name, k in n_classes.items():
            probs = np.full((self.faces.found.shape[0], k), 1.0 / k)
            if index.size:
                probs[index] = torch.softmax(self.logits[name].detach().double(), dim=1).cpu().numpy()
            out[name] = probs
        return out


@dataclass
class SubBatchContext:
    """The constants the loss of a sub-batch needs besides its images: targets and the original images' data."""

    y: np.ndarray
    """(n, A) DAL target classes, -1 where none."""
    mask: np.ndarray
    """(n, A) c_i >= C."""
    original_class: np.ndarray
    """(n, A) class of the original image's face, -1 where it has none."""
    original_found: torch.Tensor
    """(n,) bool."""
    original_boxes: torch.Tensor
    """(n, 4) float64 face boxes of the original images (placeholders where none)."""
    semantics_original: tuple[torch.Tensor, ...] | None
    """The original images' embeddings under each of L_img's embedders (:attr:`Components.semantics`: CLIP and
    DINOv2, or the user's own); None without L_img (all its weights 0)."""
    batch_size: int
    """N of the whole batch (all processes)."""


@dataclass
class Originals:
    """The frozen model's images' data for a process's images (step 1)."""

    found: torch.Tensor
    boxes: torch.Tensor
    classes: np.ndarray
    semantics: tuple[torch.Tensor, ...] | None


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


class AdftStep:
    """``step(progress) -> metrics``: one iteration of the job (module docstring), for
    :func:`scaleup.training.loop.run_training`. Gradients are left in the trainable parameters' ``.grad``."""

    def __init__(self, accelerator, config: AdftConfig, plan: JobPlan, components: Components, prompts: list[str],
                 *, timer=None) -> None:
        self.accelerator = accelerator
        self.config = config
        self.plan = plan
        self.c = components
        self.prompts = list(prompts)
        self.timer = timer or NoTimer()
        self.n_classes = {a.name: len(a.class_names) for a in plan.attributes}
        # L_img's embedders are built only when a lambda_img is non-zero (JobPlan.image_semantics)
        self.image_semantics = bool(components.semantics)
        size = config.resolution or default_size(components.pipe)
        self.height = self.width = int(size)
        # the sampler runs on its own scheduler (the pipeline's stays as the evaluation uses it); the coefficients
        # C_i come from a pristine copy, since a used multistep scheduler holds the last chain's noise predictions
        self.scheduler = type(components.pipe.scheduler).from_config(components.pipe.scheduler.config)
        self._pristine = type(components.pipe.scheduler).from_config(components.pipe.scheduler.config)
        self._gradients: dict[int, AdjustedGradient] = {}
        self.last: dict = {}
        """The last iteration's batch, targets and contexts (for logs, tests and the benchmark)."""

    # ------------------------------------------------------------------------------------------------ generation
    def adjusted_gradient(self, n_steps: int) -> AdjustedGradient:
        """Algorithm A.1's gradient mode for ``n_steps`` steps: C_i of ``config.coefficients``, standardised (or the
        exact gradient of eq. 9 with ``--gradient exact``)."""
        if n_steps not in self._gradients:
            self._gradients[n_steps] = AdjustedGradient.from_scheduler(self._pristine, n_steps, self.config.gradient,
                                                                       coefficients=self.config.coefficients)
        return self._gradients[n_steps]

    def batch(self, iteration: int) -> IterationBatch:
        steps_range = tuple(self.config.inference_steps_range) if self.config.random_inference_steps else None
        return draw_batch(self.prompts, iteration, seed=self.config.seed, batch_size=self.plan.batch_size,
                          n_steps=self.config.num_inference_steps, steps_range=steps_range)

    def _sampler(self, n_steps: int):
        """The job's scheduler with the previous chain's history dropped: a multistep solver keeps its last noise
        predictions (graph tensors after a pass with gradient), which theory's scheduler probe cannot deep-copy."""
        self.scheduler.set_timesteps(n_steps)
        return self.scheduler

    def _encode(self, prompt: str, n: int, *, original: bool) -> tuple[torch.Tensor, torch.Tensor]:
        pipe = self.c.pipe
        soft = None if original else self.c.soft_prompt
        # one encoding of P expanded to the n images: the same embeddings, and the gradient sums over the images
        cond = encode_with_soft_prompt(pipe.text_encoder, pipe.tokenizer, [prompt], soft)
        uncond = encode_with_soft_prompt(pipe.text_encoder, pipe.tokenizer, [""], None)
        return cond.expand(n, -1, -1), uncond.expand(n, -1, -1)

    def generate(self, prompt: str, z_T: torch.Tensor, n_steps: int, gradient: AdjustedGradient | None) -> torch.Tensor:
        """Images in [0, 1] from z_T with the finetuned model; with ``gradient`` None, without a graph."""
        pipe = self.c.pipe
        grad = gradient is not None
        checkpoint = grad and self.config.gradient_checkpointing
        with torch.set_grad_enabled(grad):
            with self.timer("sampling"):
                cond, uncond = self._encode(prompt, z_T.shape[0], original=False)
                z0 = sample_latents(pipe.unet, self._sampler(n_steps), cond, uncond, z_T, n_steps,
                                    self.config.guidance_scale, gradient or AdjustedGradient("exact"),
                                    checkpoint=checkpoint)
            with self.timer("decode"):
                return decode_latents(pipe.vae, z0, checkpoint=checkpoint)

    def generate_original(self, prompt: str, z_T: torch.Tensor, n_steps: int) -> torch.Tensor:
        """o_i: the frozen model's images from the same noise ([0107]), adapters disabled, no soft prompt."""
        pipe = self.c.pipe
        with torch.no_grad(), adapters_disabled(*self.c.adapted):
            cond, uncond = self._encode(prompt, z_T.shape[0], original=True)
            z0 = sample_latents(pipe.unet, self._sampler(n_steps), cond, uncond, z_T, n_steps,
                                self.config.guidance_scale, AdjustedGradient("exact"), checkpoint=False)
            return decode_latents(pipe.vae, z0, checkpoint=False)

    # ------------------------------------------------------------------------------------------------ perception
    def perceive(self, images: torch.Tensor) -> Perception:
        """Largest face of each image (found on a detached copy), its differentiable crop, each classifier's logits."""
        with self.timer("faces"):
            faces = find_faces(images.detach(), self.c.detector, expand=self.config.face_expand)
            index = torch.nonzero(faces.found, as_tuple=False).flatten()
            crops = crop_faces(images[index.to(images.device)], faces.boxes[index], self.config.crop_size) \
                if index.numel() else images.new_zeros(0, 3, self.config.crop_size, self.config.crop_size)
        with self.timer("classifier"):
            logits = {name: (self.c.classifiers[name](crops) if index.numel() else crops.new_zeros(0, k))
                      for name, k in self.n_classes.items()}
        return Perception(faces, crops, logits)

    def originals(self, prompt: str, z_T: torch.Tensor, n_steps: int) -> Originals:
        """Step 1 for a process's images, in sub-batches."""
        found, boxes, classes = [], [], []
        embedded: list[list[torch.Tensor]] = [[] for _ in self.c.semantics]
        with self.timer("original images"), torch.no_grad():
            for part in _chunks(z_T.shape[0], self.config.sub_batch_size):
                images = self.generate_original(prompt, z_T[part], n_steps)
                seen = self.perceive(images)
                cls = np.full((images.shape[0], len(self.plan.attributes)), -1, dtype=np.int64)
                index = seen.face_index.numpy()
                for a, name in enumerate(self.n_classes):
                    if index.size:
                        cls[index, a] = seen.logits[name].argmax(dim=1).cpu().numpy()
                found.append(seen.faces.found)
                boxes.append(_face_boxes(seen.faces))
                classes.append(cls)
                for rows, (_, embed) in zip(embedded, self.c.semantics):
                    rows.append(embed(images).float())
        return Originals(torch.cat(found), torch.cat(boxes), np.concatenate(classes),
                         tuple(torch.cat(rows) for rows in embedded) if self.image_semantics else None)

    # ------------------------------------------------------------------------------------------------ the loss
    def subbatch_loss(self, images: torch.Tensor, ctx: SubBatchContext,
                      seen: Perception | None = None) -> tuple[AdftLossTerms, dict]:
        """L of [0109] over the n images of a sub-batch (normalised by n, :func:`theory.adft_loss.adft_loss`) and
        diagnostics. Images without a face contribute L_img only ([0109])."""
        seen = self.perceive(images) if seen is None else seen
        found = seen.faces.found
        index = seen.face_index.numpy()
        n_faces = int(index.size)
        device = images.device
        with self.timer("losses"):
            align = None
            if n_faces:
                align = sum(dal_cross_entropy(seen.logits[name], ctx.y[index, a], ctx.mask[index, a],
                                              batch_size=n_faces) for a, name in enumerate(self.n_classes))
        with self.timer("face embedding"):
            if n_faces and self.c.external_faces is not None:
                face = face_realism_distance(self.c.face_embedder(seen.crops), self.c.external_faces.to(device))
            else:
                face = images.new_zeros(n_faces)
        with self.timer("losses"):
            weights = dynamic_image_weights(
                found, torch.as_tensor(ctx.y), torch.as_tensor(ctx.original_class), self.plan.image_weights,
                confident=torch.as_tensor(ctx.mask) if self.config.agreement_needs_confidence else None,
                dtype=torch.float32)
            # the face region of [0109]: x_i's face box, intersected with o_i's where o_i has a face (official code)
            height, width = images.shape[-2:]
            region = box_masks(_face_boxes(seen.faces), height, width, found)
            region_o = box_masks(ctx.original_boxes, height, width, ctx.original_found)
            region = region * torch.where(ctx.original_found.view(-1, 1, 1, 1), region_o, torch.ones_like(region_o))
            hooked = face_region_gradient(images, region.to(device), weights.face_gradient_scale.to(device))
        if ctx.semantics_original is None:  # L_img has weight 0 everywhere: no embedders in this run
            # zero, but in the images' graph, so a sub-batch without faces backpropagates zeros instead of failing
            distance = hooked.flatten(1).sum(dim=1) * 0.0
        else:
            with self.timer("clip+dino"):
                embedded = [embed(hooked) for _, embed in self.c.semantics]
            with self.timer("losses"):
                distance = semantics_distance(self.c.semantics, embedded,
                                              [o.to(device) for o in ctx.semantics_original])
        with self.timer("losses"):
            terms = adft_loss(align_on_faces=align, semantics=distance,
                              semantics_weight=weights.outside_face.to(device, distance.dtype), face=face,
                              has_face=found.to(device), lambda_face=self.plan.lambda_face)
        return terms, {"n_faces": n_faces, "semantics_unweighted": float(distance.detach().sum()),
                       "face_sum": float(face.detach().sum())}

    # ------------------------------------------------------------------------------------------------ targets
    def gather_targets(self, probs: dict[str, np.ndarray], found: torch.Tensor, seed: int,
                       local: tuple[int, int]) -> tuple[BatchTargets, dict]:
        """Gather every process's probabilities, form the whole batch's targets on the main process, broadcast them;
        returns the process's rows and the batch's class frequencies."""
        from accelerate.utils import broadcast

        acc = self.accelerator
        names = list(self.n_classes)
        local_rows = torch.cat([torch.as_tensor(probs[name]) for name in names] + [found.double()[:, None]], dim=1)
        rows = acc.gather(local_rows.to(acc.device)).cpu().double().numpy()
        widths = np.cumsum([0] + [self.n_classes[name] for name in names])
        all_probs = {name: rows[:, widths[a]:widths[a + 1]] for a, name in enumerate(names)}
        all_found = rows[:, -1] > 0.5
        n, n_attr = rows.shape[0], len(names)
        packed = torch.zeros(n, 3 * n_attr, dtype=torch.float64, device=acc.device)
        if acc.is_main_process:
            t = batch_targets(all_probs, all_found, self.plan.attributes, self.plan.threshold, seed=seed,
                              method=self.config.dal_method, n_samples=self.config.dal_mc_samples)
            packed = torch.as_tensor(np.concatenate([t.y, t.mask, np.nan_to_num(t.confidence, nan=-1.0)], axis=1),
                                     dtype=torch.float64, device=acc.device)
        packed = broadcast(packed, from_process=0).cpu().numpy()
        y = packed[:, :n_attr].astype(np.int64)
        mask = packed[:, n_attr:2 * n_attr] > 0.5
        conf = np.where(packed[:, 2 * n_attr:] < 0, np.nan, packed[:, 2 * n_attr:])
        start, stop = local
        frequencies = {name: _frequencies(all_probs[name][all_found]) for name in names}
        mean_probs = {name: all_probs[name][all_found].mean(axis=0).tolist() if all_found.any() else None
                      for name in names}
        info = {"class_frequencies": frequencies, "mean_probabilities": mean_probs,
                "no_face_share": float(1.0 - all_found.mean()),
                "confident_share": {name: float(mask[all_found, a].mean()) if all_found.any() else None
                                    for a, name in enumerate(names)}}
        return BatchTargets(y[start:stop], mask[start:stop], conf[start:stop]), info

    # ------------------------------------------------------------------------------------------------ the iteration
    def __call__(self, progress) -> dict:
        started = time.perf_counter()
        acc, pipe = self.accelerator, self.c.pipe
        batch = self.batch(progress.data_position)
        progress.data_position += 1
        local = batch.local(acc.process_index, acc.num_processes)
        seeds = batch.seeds[local[0]:local[1]]
        z_T = seed_latents(seeds, latent_shape(pipe, self.height, self.width), device=acc.device)
        gradient = self.adjusted_gradient(batch.n_steps)
        parts = _chunks(len(seeds), self.config.sub_batch_size)
        originals = self.originals(batch.prompt, z_T, batch.n_steps)

        if len(parts) == 1:  # one pass: the images with gradient also give the targets
            images = self.generate(batch.prompt, z_T, batch.n_steps, gradient)
            seen = [self.perceive(images)]
            kept = [(images, seen[0])]
        else:  # a pass without gradient for the targets, then one with gradient per sub-batch
            with torch.no_grad(), self.timer("sampling (targets pass)"):
                seen = [self.perceive(self.generate(batch.prompt, z_T[p], batch.n_steps, None)) for p in parts]
            kept = None
        probs = {name: np.concatenate([s.probabilities(self.n_classes)[name] for s in seen]) for name in self.n_classes}
        found = torch.cat([s.faces.found for s in seen])
        with self.timer("targets"):
            targets, info = self.gather_targets(probs, found, batch.dal_seed, local)
        original_counts = self._gather_original_frequencies(originals)

        totals = {"loss": 0.0, "loss_align": 0.0, "loss_img": 0.0, "loss_face": 0.0, "l_img_unweighted": 0.0}
        scale = self.plan.loss_scale
        n_global = self.plan.batch_size
        contexts = []
        for j, part in enumerate(parts):
            if kept is not None:
                images, seen_j = kept[j]
            else:
                images, seen_j = self.generate(batch.prompt, z_T[part], batch.n_steps, gradient), None
            ctx = SubBatchContext(y=targets.y[part], mask=targets.mask[part],
                                  original_class=originals.classes[part], original_found=originals.found[part],
                                  original_boxes=originals.boxes[part],
                                  semantics_original=None if originals.semantics is None
                                  else tuple(o[part] for o in originals.semantics),
                                  batch_size=n_global)
            contexts.append(ctx)
            terms, extra = self.subbatch_loss(images, ctx, seen_j)
            share = images.shape[0] / n_global  # the sub-batch's part of the batch mean (theory.dal_parts)
            with self.timer("backward"):
                acc.backward(terms.total * (share * scale))
            totals["loss"] += float(terms.total.detach()) * share
            totals["loss_align"] += float(terms.align.detach()) * share
            totals["loss_img"] += float(terms.semantics.detach()) * share
            totals["loss_face"] += float(terms.face.detach()) * share
            totals["l_img_unweighted"] += extra["semantics_unweighted"] / n_global
            del images, terms
        with self.timer("gradient all-reduce"):
            self._sum_gradients(scale)
        summed = acc.reduce(torch.tensor(list(totals.values()), dtype=torch.float64, device=acc.device),
                            reduction="sum").cpu().tolist()
        self.last = {"batch": batch, "targets": targets, "contexts": contexts, "gradient": gradient,
                     "local": local}
        metrics = dict(zip(totals, summed))
        metrics.update(info, original_class_frequencies=original_counts, prompt=batch.prompt,
                       n_steps=batch.n_steps, seconds=round(time.perf_counter() - started, 4))
        return metrics

    def _gather_original_frequencies(self, originals: Originals) -> dict[str, list[float] | None]:
        classes = self.accelerator.gather(torch.as_tensor(originals.classes, device=self.accelerator.device))
        classes = classes.cpu().numpy()
        out = {}
        for a, (name, k) in enumerate(self.n_classes.items()):
            seen = classes[:, a][classes[:, a] >= 0]
            out[name] = (np.bincount(seen, minlength=k) / seen.size).tolist() if seen.size else None
        return out

    def _sum_gradients(self, loss_scale: float) -> None:
        """Sum the trained parameters' gradients over processes (each holds its images' share of the batch mean),
        and undo the static loss scale."""
        params = self.c.trainable
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if self.accelerator.num_processes > 1:
            from accelerate.utils import reduce

            flat = torch.cat([p.grad.reshape(-1) for p in params])
            flat = reduce(flat, reduction="sum")
            offset = 0
            for p in params:
                p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        if loss_scale != 1.0:
            for p in params:
                p.grad.div_(loss_scale)


def semantics_distance(embedders: tuple[tuple[str, object], ...], x: list[torch.Tensor],
                       o: list[torch.Tensor]) -> torch.Tensor:
    """The bracket of seed 000 eq. 7 per image: (1 - cos CLIP) + (1 - cos DINO) with the paper's two embedders,
    1 - cos of the user's own embedder otherwise (``--image-embedder``)."""
    if [name for name, _ in embedders] == ["clip", "dinov2"]:
        return image_semantics_distance(x[0], o[0], x[1], o[1])
    return sum(cosine_distance(x_e, o_e, names=(f"{name}(x)", f"{name}(o)"))
               for (name, _), x_e, o_e in zip(embedders, x, o))


def _face_boxes(faces: FaceBoxes) -> torch.Tensor:
    """The detector's boxes of the chosen faces, the whole-image placeholder where no face was found."""
    return torch.where(faces.found[:, None], torch.nan_to_num(faces.detections), faces.boxes)


def _frequencies(probs: np.ndarray) -> list[float] | None:
    """Share of each class among the argmax predictions (None without faces)."""
    if probs.shape[0] == 0:
        return None
    return (np.bincount(probs.argmax(axis=1), minlength=probs.shape[1]) / probs.shape[0]).tolist()
