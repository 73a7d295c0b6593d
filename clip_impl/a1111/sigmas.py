"""ComfyUI's sampling schedules for SD1.x/SD2.x/SDXL, computed without ComfyUI, and the timestep ranges
that make a sampler use one conditioning entry per step.

Model sampling: discrete, 1000 steps, scaled-linear betas 0.00085..0.012 (ComfyUI's
``ModelSamplingDiscrete`` defaults, the same for SD1.x, SD2.x and SDXL): sigma_t =
sqrt((1 - alphabar_t) / alphabar_t). Our own code for the rules in ComfyUI 0.3.64's ``comfy/samplers.py``
(``calculate_sigmas`` and the scheduler functions) and ``comfy/model_sampling.py`` (``sigma``,
``timestep``, ``percent_to_sigma``), in the same float32 arithmetic, so the sigmas agree with ComfyUI's.

A conditioning entry with ``start_percent``/``end_percent`` is used at sigma s when
``percent_to_sigma(end) <= s <= percent_to_sigma(start)`` (``get_area_and_mult``). :func:`step_percents`
puts each boundary between two consecutive steps' sigmas, a quarter of the way (in log sigma) from the
later, smaller one, so exactly one entry covers each step's sigma; a second-order sampler's midpoint
evaluation (DPM2: the geometric mean of the two sigmas) falls on the earlier step's side.

``beta`` uses the inverse regularized incomplete beta function, which ComfyUI takes from scipy; here it is
computed with numpy (continued fraction and bisection), agreeing with scipy to ~1e-12 before rounding to
a timestep.
"""

from __future__ import annotations

import bisect
import math
from functools import lru_cache
from typing import Literal, get_args

import numpy as np
import torch

from .limits import check_steps

Scheduler = Literal[
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic", "kl_optimal",
]
SCHEDULERS: tuple[Scheduler, ...] = get_args(Scheduler)
BOUNDARY_FRACTION = 0.25  # where between two steps' log sigmas a boundary goes, from the smaller one


@lru_cache(maxsize=1)
def discrete_sigmas() -> tuple[torch.Tensor, torch.Tensor]:
    """(sigmas (1000,), log_sigmas (1000,)) float32 of SD's discrete model sampling, timestep 0 first."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    return sigmas.float(), sigmas.log().float()


def sigma_at(timestep: torch.Tensor) -> torch.Tensor:
    """sigma for (fractional) timesteps: log-linear between the table's entries (float32)."""
    _, log_sigmas = discrete_sigmas()
    t = torch.clamp(timestep.float(), min=0, max=len(log_sigmas) - 1)
    low, high, w = t.floor().long(), t.ceil().long(), t.frac()
    return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()


def timestep_of(sigma: torch.Tensor) -> torch.Tensor:
    """The table timestep whose log sigma is nearest."""
    _, log_sigmas = discrete_sigmas()
    return (sigma.log() - log_sigmas[:, None]).abs().argmin(dim=0).view(sigma.shape)


def percent_to_sigma(percent: float) -> float:
    """ComfyUI's ``percent_to_sigma``: 0 -> 999999999.9 (every sigma), 1 -> 0.0."""
    if percent <= 0.0:
        return 999999999.9
    if percent >= 1.0:
        return 0.0
    return sigma_at(torch.tensor((1.0 - percent) * 999.0)).item()


def _normal(steps: int, sgm: bool = False) -> list[float]:
    sigmas, _ = discrete_sigmas()
    start, end = timestep_of(sigmas[-1]), timestep_of(sigmas[0])
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:  # end's sigma is never ~0 for SD's table, so a 0 is appended
        timesteps = torch.linspace(start, end, steps)
    return [float(sigma_at(t)) for t in timesteps] + [0.0]


def _simple(steps: int) -> list[float]:
    sigmas, _ = discrete_sigmas()
    stride = len(sigmas) / steps
    return [float(sigmas[-(1 + int(x * stride))]) for x in range(steps)] + [0.0]


def _ddim_uniform(steps: int) -> list[float]:
    sigmas, _ = discrete_sigmas()
    out, x, stride = [0.0], 1, max(len(sigmas) // steps, 1)
    while x < len(sigmas):
        out.append(float(sigmas[x]))
        x += stride
    return out[::-1]


def _karras(steps: int, rho: float = 7.0) -> torch.Tensor:
    sigmas, _ = discrete_sigmas()
    lo, hi = float(sigmas[0]), float(sigmas[-1])
    ramp = torch.linspace(0, 1, steps)
    out = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    return torch.cat([out, out.new_zeros([1])])


def _exponential(steps: int) -> torch.Tensor:
    sigmas, _ = discrete_sigmas()
    out = torch.linspace(math.log(float(sigmas[-1])), math.log(float(sigmas[0])), steps).exp()
    return torch.cat([out, out.new_zeros([1])])


def _kl_optimal(steps: int) -> torch.Tensor:
    sigmas, _ = discrete_sigmas()
    lo, hi = float(sigmas[0]), float(sigmas[-1])
    idx = torch.arange(steps, dtype=torch.float).div_(steps - 1)
    out = idx.new_zeros(steps + 1)
    out[:-1] = (idx * math.atan(lo) + (1 - idx) * math.atan(hi)).tan_()
    return out


def _linear_quadratic(steps: int, threshold: float = 0.025) -> torch.Tensor:
    sigmas, _ = discrete_sigmas()
    if steps == 1:
        schedule = [1.0, 0.0]
    else:
        linear = steps // 2
        values = [i * threshold / linear for i in range(linear)]
        diff = linear - threshold * steps
        quadratic = steps - linear
        a = diff / (linear * quadratic**2)
        b = threshold / linear - 2 * diff / (quadratic**2)
        c = a * (linear**2)
        values += [a * (i**2) + b * i + c for i in range(linear, steps)]
        schedule = [1.0 - x for x in values + [1.0]]
    return torch.FloatTensor(schedule) * sigmas[-1]


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) (Lentz's continued fraction, float64)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-15:
            break
    return math.exp(log_front) * (f - 1.0) / a


def beta_ppf(q: float, a: float, b: float) -> float:
    """Inverse of :func:`_betainc` in x (bisection to float64 precision)."""
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if _betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _beta(steps: int, alpha: float = 0.6, beta: float = 0.6) -> list[float]:
    sigmas, _ = discrete_sigmas()
    total = len(sigmas) - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    timesteps = np.rint(np.array([beta_ppf(float(q), alpha, beta) for q in quantiles]) * total)
    out, last = [], -1
    for t in timesteps:
        if t != last:
            out.append(float(sigmas[int(t)]))
        last = t
    return out + [0.0]


_HANDLERS = {
    "simple": _simple,
    "sgm_uniform": lambda n: _normal(n, sgm=True),
    "karras": _karras,
    "exponential": _exponential,
    "ddim_uniform": _ddim_uniform,
    "beta": _beta,
    "normal": _normal,
    "linear_quadratic": _linear_quadratic,
    "kl_optimal": _kl_optimal,
}


def calculate_sigmas(scheduler: Scheduler, steps: int) -> torch.Tensor:
    """ComfyUI's ``calculate_sigmas`` for an SD model: (steps + 1,) float32, descending, ending in 0.

    Some schedulers give fewer sigmas than asked for (``beta`` drops repeated timesteps) or more
    (``ddim_uniform`` when 1000 is not a multiple of ``steps``); the sampler then runs len - 1 steps."""
    if scheduler not in _HANDLERS:
        raise ValueError(f"scheduler={scheduler!r}; use one of {', '.join(SCHEDULERS)}")
    steps = check_steps(steps, minimum=1)  # before any tensor is sized from it
    out = _HANDLERS[scheduler](steps)
    return out.float() if isinstance(out, torch.Tensor) else torch.FloatTensor(out)


def _percent_for(sigma_hi: float, sigma_lo: float) -> float | None:
    """A percent whose sigma lies strictly between two consecutive steps' sigmas (None if none does):
    the table inverted at the target's log sigma, checked (and nudged) with :func:`percent_to_sigma`."""
    _, log_sigmas = discrete_sigmas()
    table = log_sigmas.double().tolist()
    target = math.log(sigma_lo) + BOUNDARY_FRACTION * (math.log(sigma_hi) - math.log(sigma_lo))
    target = min(max(target, table[0]), table[-1])
    k = min(max(bisect.bisect_right(table, target) - 1, 0), len(table) - 2)
    t = k + (target - table[k]) / (table[k + 1] - table[k])
    p = 1.0 - t / (len(table) - 1)
    for _ in range(64):
        if not 0.0 < p < 1.0:
            return None
        s = percent_to_sigma(p)
        if sigma_lo < s < sigma_hi:
            return p
        p += 1e-7 if s >= sigma_hi else -1e-7  # float32 rounding put it on an edge: step inwards
    return None


def step_percents(scheduler: Scheduler, steps: int) -> list[float]:
    """``start_percent`` of each sampler step (0.0 for the first) followed by 1.0: an entry covering steps
    a..b-1 gets ``start_percent = out[a]``, ``end_percent = out[b]`` and is then the only one used at those
    steps by a sampler run with the same ``scheduler`` and ``steps`` (denoise 1, a sampler that keeps the
    penultimate sigma). Length: the number of steps the sampler runs, plus 1."""
    sigmas = [float(s) for s in calculate_sigmas(scheduler, steps)]
    n = len(sigmas) - 1
    out = [0.0]
    for b in range(1, n):
        p = _percent_for(sigmas[b - 1], sigmas[b])
        if p is None:
            raise ValueError(
                f"scheduler {scheduler!r} with {steps} steps: steps {b - 1} and {b} have sigmas {sigmas[b - 1]:.6g} "
                f"and {sigmas[b]:.6g}, which no timestep range can tell apart; use another scheduler or step count"
            )
        out.append(p)
    return out + [1.0]
