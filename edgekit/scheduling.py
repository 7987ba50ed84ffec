"""The denoising schedule of a Stable Diffusion artifact: one spec in the manifest, one sampler.

`SchedulerSpec` is the manifest's `pipeline.scheduler` block. It names the sampling algorithm and
every number the algorithm needs, with nothing left to a library default, so a demo app (Kotlin,
Swift) can implement the sampler from the manifest alone. Two things meet in it:

- the noise schedule (betas, how many training timesteps, what the UNet predicts): a property of
  the trained model, copied from the source's `scheduler/scheduler_config.json`;
- the sampler: edgekit's choice, deterministic DDIM (eta = 0), whatever sampler the source
  shipped (SD 1.5 ships PNDM). DDIM with eta = 0 draws no noise after the initial latents, so an
  artifact and its PyTorch reference see the same random numbers and their images compare.

The artifact's `scheduler_config.json` is derived from the spec (a `DDIMScheduler` config with
the same values), so a diffusers user who loads it gets the same sampler.

`DDIMSampler` below is the reference implementation, in numpy and driven only by the spec. Each
step is written out with its formula so it can be ported line by line; tests check it against
diffusers' DDIMScheduler configured from the same spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from edgekit.errors import EdgekitError, SourceError


class SamplerAlgorithm(StrEnum):
    DDIM = "ddim"


class BetaSchedule(StrEnum):
    LINEAR = "linear"
    SCALED_LINEAR = "scaled_linear"
    SQUAREDCOS_CAP_V2 = "squaredcos_cap_v2"


class PredictionType(StrEnum):
    EPSILON = "epsilon"
    V_PREDICTION = "v_prediction"
    SAMPLE = "sample"


class TimestepSpacing(StrEnum):
    LEADING = "leading"
    TRAILING = "trailing"
    LINSPACE = "linspace"


# squaredcos_cap_v2 (Nichol & Dhariwal's cosine schedule) caps each beta here, as diffusers does,
# so the last steps never divide by an alpha of zero.
COSINE_MAX_BETA = 0.999
COSINE_OFFSET = 0.008


class SchedulerSpec(BaseModel):
    """The denoising loop an app must run: algorithm and every parameter, all explicit."""

    algorithm: SamplerAlgorithm = Field(
        description="'ddim': DDIM (Song et al. 2020), deterministic with eta = 0. Chosen by "
        "edgekit, whatever sampler the source model shipped."
    )
    num_train_timesteps: int = Field(
        ge=2, description="N: length of the training noise schedule; timesteps lie in [0, N)."
    )
    beta_start: float = Field(gt=0, lt=1, description="Noise variance at timestep 0.")
    beta_end: float = Field(gt=0, lt=1, description="Noise variance at timestep N - 1.")
    beta_schedule: BetaSchedule = Field(
        description="How betas run from beta_start to beta_end: 'linear' in beta, "
        "'scaled_linear' linear in sqrt(beta) (SD 1.x), 'squaredcos_cap_v2' the cosine schedule "
        "(ignores beta_start/beta_end)."
    )
    prediction_type: PredictionType = Field(
        description="What the UNet outputs: 'epsilon' the noise, 'v_prediction' "
        "v = sqrt(abar) * noise - sqrt(1 - abar) * x0, 'sample' x0 itself."
    )
    timestep_spacing: TimestepSpacing = Field(
        description="How `steps` timesteps are picked from [0, N); see edgekit/scheduling.py."
    )
    steps_offset: int = Field(
        ge=0, description="Added to every timestep with 'leading' spacing (SD 1.x: 1)."
    )
    set_alpha_to_one: bool = Field(
        description="Last step: true -> the previous abar is 1; false -> it is abar[0]."
    )
    clip_sample: bool = Field(description="Clamp the predicted x0 to +-clip_sample_range.")
    clip_sample_range: float = Field(gt=0, description="Only used when clip_sample is true.")
    eta: Literal[0.0] = Field(
        description="DDIM's stochasticity; 0: no noise is added after the initial latents."
    )
    init_noise_sigma: Literal[1.0] = Field(
        description="The initial latents are standard normal noise times this. DDIM also leaves "
        "the UNet input unscaled (scale_model_input is the identity)."
    )


# A source's scheduler_config.json may leave keys out; diffusers then fills them with the class's
# own defaults. edgekit fills them with DDIMScheduler's (diffusers 0.42), which is what the common
# swap `DDIMScheduler.from_config(pipe.scheduler.config)` gives a diffusers user, and what
# `edgekit generate` ran before the spec existed. A test pins these to diffusers' signature.
SOURCE_CONFIG_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "clip_sample": True,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "prediction_type": "epsilon",
    "thresholding": False,
    "clip_sample_range": 1.0,
    "timestep_spacing": "leading",
    "rescale_betas_zero_snr": False,
}


class SchedulerError(EdgekitError):
    """A step count the schedule cannot serve."""

    exit_code = 2


def spec_from_source_config(config: dict[str, Any], *, origin: str) -> SchedulerSpec:
    """The DDIM spec for a source's scheduler config (any diffusers scheduler class).

    Keys that belong to the source's own sampler (PNDM's skip_prk_steps, Euler's
    use_karras_sigmas, ...) do not apply to DDIM and are dropped. A noise schedule DDIM cannot
    reproduce exactly is refused, never approximated.
    """
    values = {**SOURCE_CONFIG_DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    hint = "edgekit exports the schedules diffusers' DDIMScheduler takes without extensions."
    if config.get("trained_betas") is not None:
        raise SourceError(
            f"{origin} lists its betas explicitly (trained_betas); edgekit records a schedule as "
            "beta_start, beta_end and beta_schedule only.",
            hint=hint,
        )
    for key in ("thresholding", "rescale_betas_zero_snr"):
        if values[key] is not False:
            raise SourceError(
                f"{origin} sets {key}={values[key]!r}; edgekit's DDIM supports only false.",
                hint=hint,
            )
    for key, allowed in (
        ("beta_schedule", BetaSchedule),
        ("prediction_type", PredictionType),
        ("timestep_spacing", TimestepSpacing),
    ):
        if values[key] not in {member.value for member in allowed}:
            known = ", ".join(member.value for member in allowed)
            raise SourceError(
                f"{origin} has {key}={values[key]!r}; edgekit supports: {known}.", hint=hint
            )
    try:
        return SchedulerSpec(
            algorithm=SamplerAlgorithm.DDIM,
            num_train_timesteps=values["num_train_timesteps"],
            beta_start=values["beta_start"],
            beta_end=values["beta_end"],
            beta_schedule=values["beta_schedule"],
            prediction_type=values["prediction_type"],
            timestep_spacing=values["timestep_spacing"],
            steps_offset=values["steps_offset"],
            set_alpha_to_one=values["set_alpha_to_one"],
            clip_sample=values["clip_sample"],
            clip_sample_range=values["clip_sample_range"],
            eta=0.0,
            init_noise_sigma=1.0,
        )
    except ValueError as exc:  # pydantic's ValidationError: a value out of range or mistyped
        first = str(exc).splitlines()
        detail = f"{first[1].strip()}: {first[2].strip()}" if len(first) > 2 else str(exc)
        raise SourceError(
            f"{origin} has a value edgekit cannot use ({detail}).", hint=hint
        ) from exc


def diffusers_config(spec: SchedulerSpec) -> dict[str, Any]:
    """The artifact's scheduler_config.json: DDIMScheduler with exactly the spec's values.

    eta is not part of a diffusers config (it is an argument of step(); 0.0 is its default).
    """
    return {
        "_class_name": "DDIMScheduler",
        "num_train_timesteps": spec.num_train_timesteps,
        "beta_start": spec.beta_start,
        "beta_end": spec.beta_end,
        "beta_schedule": spec.beta_schedule.value,
        "trained_betas": None,
        "prediction_type": spec.prediction_type.value,
        "timestep_spacing": spec.timestep_spacing.value,
        "steps_offset": spec.steps_offset,
        "set_alpha_to_one": spec.set_alpha_to_one,
        "clip_sample": spec.clip_sample,
        "clip_sample_range": spec.clip_sample_range,
        "thresholding": False,
        "rescale_betas_zero_snr": False,
    }


def alphas_cumprod(spec: SchedulerSpec) -> np.ndarray:
    """abar[t] for t in [0, N): the fraction of signal variance left after t noising steps.

    Computed in float64 (1000 numbers; a port should use Double). With i = 0 .. N-1:
      linear:            beta[i] = beta_start + i * (beta_end - beta_start) / (N - 1)
      scaled_linear:     beta[i] = (sqrt(beta_start)
                                    + i * (sqrt(beta_end) - sqrt(beta_start)) / (N - 1)) ** 2
      squaredcos_cap_v2: f(u) = cos((u + 0.008) / 1.008 * pi / 2) ** 2
                         beta[i] = min(1 - f((i + 1) / N) / f(i / N), 0.999)
      abar[t] = (1 - beta[0]) * (1 - beta[1]) * ... * (1 - beta[t])
    """
    n = spec.num_train_timesteps
    i = np.arange(n, dtype=np.float64)
    if spec.beta_schedule == BetaSchedule.LINEAR:
        betas = spec.beta_start + i * (spec.beta_end - spec.beta_start) / (n - 1)
    elif spec.beta_schedule == BetaSchedule.SCALED_LINEAR:
        low, high = math.sqrt(spec.beta_start), math.sqrt(spec.beta_end)
        betas = (low + i * (high - low) / (n - 1)) ** 2
    else:

        def f(u: np.ndarray) -> np.ndarray:
            return np.cos((u + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

        betas = np.minimum(1 - f((i + 1) / n) / f(i / n), COSINE_MAX_BETA)
    return np.cumprod(1.0 - betas)


def timesteps(spec: SchedulerSpec, steps: int) -> list[int]:
    """The `steps` UNet timesteps, from the noisiest down. With N = num_train_timesteps:

      leading:  t_i = i * (N // steps) + steps_offset     (i = 0 .. steps-1, then reversed)
      linspace: t_i = round(i * ((N - 1) / (steps - 1)))  (i = 0 .. steps-1, then reversed;
                                                          the last is exactly N - 1; steps=1: 0)
      trailing: d = (N - N / steps) - N                   (in double: NOT exactly -N / steps)
                t_i = round(N + i * d) - 1                (i = 0 .. steps-1, already descending)

    All in double. round() is round-half-to-even (Kotlin Math.rint, Swift .toNearestOrEven):
    x.5 values occur (linspace N=1000 steps=3: 499.5 -> 500; trailing steps=16: 937.5 -> 938),
    and round-half-up would pick other timesteps. 'trailing' computes its step `d` the way
    np.arange does (as diffusers does), because 1000 - 3 * (1000 / 48) is 937.5 but
    1000 + 3 * d is 937.4999999999999, which rounds to 937: the timesteps match diffusers'
    exactly. One deliberate difference: where np.arange overshoots (N=1000, steps=61, 103, ...)
    diffusers 0.42 returns an extra timestep, -1; edgekit returns exactly `steps`, never -1.
    """
    n = spec.num_train_timesteps
    if steps < 1 or steps > n:
        raise SchedulerError(
            f"--steps {steps} is not allowed: the schedule has {n} training timesteps.",
            hint=f"use 1 to {n} steps.",
        )
    if spec.timestep_spacing == TimestepSpacing.LEADING:
        ratio = n // steps
        result = [i * ratio + spec.steps_offset for i in reversed(range(steps))]
    elif spec.timestep_spacing == TimestepSpacing.LINSPACE:
        if steps == 1:
            result = [0]
        else:
            delta = (n - 1) / (steps - 1)
            result = [n - 1] + [round(i * delta) for i in reversed(range(steps - 1))]
    else:
        d = (n - n / steps) - n
        result = [round(n + i * d) - 1 for i in range(steps)]
    if max(result) >= n:
        raise SchedulerError(
            f"--steps {steps} with steps_offset {spec.steps_offset} reaches timestep "
            f"{max(result)}, past the schedule's last ({n - 1}).",
            hint=f"use fewer than {steps} steps.",
        )
    return result


@dataclass
class StepResult:
    prev_sample: np.ndarray  # x_{t_prev}: the next loop's latents
    pred_original_sample: np.ndarray  # x0 as predicted at this step (after clipping)


class DDIMSampler:
    """Deterministic DDIM (eta = 0), driven only by a SchedulerSpec.

    The loop an app runs:
        sampler = DDIMSampler(spec); ts = sampler.set_timesteps(steps)
        latents = standard_normal(shape) * spec.init_noise_sigma
        for t in ts:
            model_output = unet(sampler.scale_model_input(latents, t), t, text)  # + guidance
            latents = sampler.step(model_output, t, latents).prev_sample
    """

    def __init__(self, spec: SchedulerSpec) -> None:
        if spec.algorithm != SamplerAlgorithm.DDIM:
            raise SchedulerError(
                f"Sampler '{spec.algorithm}' is not implemented.", hint="use 'ddim'."
            )
        self.spec = spec
        self.alphas_cumprod = alphas_cumprod(spec)
        # The abar "before" the last step, whose previous timestep is negative.
        self.final_alpha_cumprod = 1.0 if spec.set_alpha_to_one else float(self.alphas_cumprod[0])
        self.timesteps: list[int] = []
        self.step_ratio = 0

    def set_timesteps(self, steps: int) -> list[int]:
        self.timesteps = timesteps(self.spec, steps)
        # Every spacing steps back by N // steps to find the previous timestep (as diffusers'
        # DDIM does), even where the picked timesteps are not that far apart.
        self.step_ratio = self.spec.num_train_timesteps // steps
        return self.timesteps

    def scale_model_input(self, sample: np.ndarray, timestep: int) -> np.ndarray:
        """DDIM feeds the latents to the UNet unscaled."""
        return sample

    def step(self, model_output: np.ndarray, timestep: int, sample: np.ndarray) -> StepResult:
        """x_t -> x_{t_prev}: formula (12) of the DDIM paper with sigma_t = 0 (eta = 0).

        Coefficients are float64 scalars; the arrays stay float32.
        """
        spec = self.spec
        # 1. The previous timestep, and the signal fractions at both ends of this step.
        prev_timestep = timestep - self.step_ratio
        alpha_t = float(self.alphas_cumprod[timestep])  # abar_t
        alpha_prev = (
            float(self.alphas_cumprod[prev_timestep])
            if prev_timestep >= 0
            else self.final_alpha_cumprod
        )  # abar_prev
        beta_t = 1.0 - alpha_t
        # 2. Predicted x0 and predicted noise eps from the UNet output, by prediction_type:
        #    epsilon:      x0 = (x_t - sqrt(1 - abar_t) * out) / sqrt(abar_t);  eps = out
        #    sample:       x0 = out;  eps = (x_t - sqrt(abar_t) * x0) / sqrt(1 - abar_t)
        #    v_prediction: x0 = sqrt(abar_t) * x_t - sqrt(1 - abar_t) * out
        #                  eps = sqrt(abar_t) * out + sqrt(1 - abar_t) * x_t
        if spec.prediction_type == PredictionType.EPSILON:
            pred_x0 = (sample - math.sqrt(beta_t) * model_output) / math.sqrt(alpha_t)
            pred_eps = model_output
        elif spec.prediction_type == PredictionType.SAMPLE:
            pred_x0 = model_output
            pred_eps = (sample - math.sqrt(alpha_t) * pred_x0) / math.sqrt(beta_t)
        else:
            pred_x0 = math.sqrt(alpha_t) * sample - math.sqrt(beta_t) * model_output
            pred_eps = math.sqrt(alpha_t) * model_output + math.sqrt(beta_t) * sample
        # 3. Optionally clamp x0 to [-clip_sample_range, clip_sample_range]; eps is NOT
        #    re-derived from the clamped x0.
        if spec.clip_sample:
            pred_x0 = np.clip(pred_x0, -spec.clip_sample_range, spec.clip_sample_range)
        # 4. x_prev = sqrt(abar_prev) * x0 + sqrt(1 - abar_prev) * eps
        #    (sigma_t = eta * ... = 0, so no noise term and no sigma_t^2 under the root).
        prev_sample = math.sqrt(alpha_prev) * pred_x0 + math.sqrt(1.0 - alpha_prev) * pred_eps
        return StepResult(
            prev_sample=np.asarray(prev_sample, dtype=np.float32),
            pred_original_sample=np.asarray(pred_x0, dtype=np.float32),
        )


def sampler_for(spec: SchedulerSpec) -> DDIMSampler:
    """The sampler the spec names (only DDIM today)."""
    return DDIMSampler(spec)
