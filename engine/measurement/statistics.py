"""Lift of a treated group (or variant B) over its control (or A): pure functions, no database.

Two answers for every comparison, both at level `alpha` (95% intervals by default):

- fixed horizon: the textbook test, valid when the sample size was fixed in advance and
  the result is read once. Proportions: two-proportion z-test, pooled standard error for
  the p-value (the null hypothesis says both rates are equal, so one rate is estimated
  from both groups), unpooled standard error for the interval (an interval is about
  differences that need not be zero, so each group keeps its own rate). Means: Welch's t
  test with Welch-Satterthwaite degrees of freedom and the exact Student t distribution.
- always valid: a mixture sequential probability ratio test (mSPRT; Robbins 1970,
  Johari, Koomen, Pekelis & Walsh 2017, "Peeking at A/B tests", and 2022, "Always valid
  inference", Operations Research) with a normal mixture of variance tau^2 over the
  difference. Its p-value and confidence sequence stay valid however often they are
  looked at: P(the interval misses the true difference at ANY look) <= alpha.

Everything is computed from sufficient statistics (counts, sums, sums of squares), so SQL
can aggregate and these functions only do arithmetic. The standard library suffices:
`statistics.NormalDist` for the normal distribution, and the Student t distribution is
computed exactly here from the regularized incomplete beta function (no scipy).

docs/measurement.md has every formula with a worked example.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from statistics import NormalDist
from typing import Literal

__all__ = [
    "DEFAULT_TUNING_N",
    "Lift",
    "compare_means",
    "compare_proportions",
    "mixture_variance_for",
    "required_sample_size",
    "verdict",
]

_NORMAL = NormalDist()

#: The default mixture variance tunes the confidence sequence to be narrowest when each
#: group has this many users (see `mixture_variance_for`).
DEFAULT_TUNING_N = 1_000


@dataclass(frozen=True)
class Lift:
    """Treated (variant B) against control (variant A); `absolute` is treated - control.

    Proportions are fractions (0.021 is 2.1 percentage points); means are in the unit of
    the summed values (revenue per user in the shop currency). `alpha` is the level both
    intervals were computed at; `metric` says which function made the lift.
    """

    treated: float
    control: float
    absolute: float
    relative: float | None
    ci_low: float
    ci_high: float
    p_value: float
    always_valid_low: float
    always_valid_high: float
    always_valid_p: float
    metric: Literal["proportion", "mean"] = "proportion"
    alpha: float = 0.05


# --- public API -----------------------------------------------------------------------------


def compare_proportions(
    conversions_t: int,
    n_t: int,
    conversions_c: int,
    n_c: int,
    *,
    alpha: float = 0.05,
    mixture_variance: float | None = None,
) -> Lift:
    """Conversion rate of the treated group against the control group.

    Fixed horizon: z = (p_t - p_c) / sqrt(p(1-p)(1/n_t + 1/n_c)) with the pooled rate
    p = (x_t + x_c) / (n_t + n_c) for the p-value; the interval is
    (p_t - p_c) +- z_{1-alpha/2} sqrt(p_t(1-p_t)/n_t + p_c(1-p_c)/n_c), clipped to [-1, 1].

    Always valid: mSPRT on the difference with variance V = sum of p~(1-p~)/n over both
    groups, where p~ = (x + 1)/(n + 2) (the rates shrunk by one success and one failure, so
    that an early group with no conversion does not claim zero variance). The mixture
    variance is `mixture_variance` (tau^2, in squared fractions) when given, otherwise
    `mixture_variance_for(p~_t(1-p~_t) + p~_c(1-p~_c), DEFAULT_TUNING_N, alpha=alpha)`.
    """
    x_t, n_t = _count(conversions_t, "conversions_t"), _count(n_t, "n_t")
    x_c, n_c = _count(conversions_c, "conversions_c"), _count(n_c, "n_c")
    _check_alpha(alpha)
    for x, n, name in ((x_t, n_t, "t"), (x_c, n_c, "c")):
        if n < 1:
            raise ValueError(f"n_{name} must be at least 1, got {n}")
        if x > n:
            raise ValueError(f"conversions_{name} ({x}) is more than n_{name} ({n})")
    rate_t, rate_c = x_t / n_t, x_c / n_c
    diff = rate_t - rate_c

    pooled = (x_t + x_c) / (n_t + n_c)
    se_null = math.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
    p_value = _normal_two_sided_p(diff, se_null)
    se = math.sqrt(rate_t * (1 - rate_t) / n_t + rate_c * (1 - rate_c) / n_c)
    half = _NORMAL.inv_cdf(1 - alpha / 2) * se
    ci_low, ci_high = max(-1.0, diff - half), min(1.0, diff + half)

    shrunk_t, shrunk_c = (x_t + 1) / (n_t + 2), (x_c + 1) / (n_c + 2)
    unit_t, unit_c = shrunk_t * (1 - shrunk_t), shrunk_c * (1 - shrunk_c)
    variance = unit_t / n_t + unit_c / n_c
    tau2 = _tau2(mixture_variance, unit_t + unit_c, alpha)
    av_low, av_high, av_p = _mixture_sprt(diff, variance, tau2, alpha)
    return Lift(
        treated=rate_t,
        control=rate_c,
        absolute=diff,
        relative=diff / rate_c if rate_c else None,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=p_value,
        always_valid_low=max(-1.0, av_low),
        always_valid_high=min(1.0, av_high),
        always_valid_p=av_p,
        metric="proportion",
        alpha=alpha,
    )


def compare_means(
    sum_t: float,
    sum_sq_t: float,
    n_t: int,
    sum_c: float,
    sum_sq_c: float,
    n_c: int,
    *,
    alpha: float = 0.05,
    mixture_variance: float | None = None,
) -> Lift:
    """Mean per user (revenue per user...) of the treated group against the control group.

    Takes sufficient statistics so SQL can aggregate: the sum of the values, the sum of
    their squares and the count, per group (users without a purchase count with value 0).
    Decimals are accepted and converted to float. Each group needs at least 2 users.

    Fixed horizon: Welch's t = (m_t - m_c) / se with se^2 = s_t^2/n_t + s_c^2/n_c, the
    Welch-Satterthwaite degrees of freedom and the exact Student t distribution (no normal
    approximation, whatever the degrees of freedom).

    Always valid: mSPRT on the difference with V = se^2 (a plug-in variance: valid as the
    samples grow, like the asymptotic confidence sequences of Waudby-Smith et al. 2024);
    tau^2 is `mixture_variance` (in squared units of the values) when given, otherwise
    `mixture_variance_for(s_t^2 + s_c^2, DEFAULT_TUNING_N, alpha=alpha)`.
    """
    n_t, n_c = _count(n_t, "n_t"), _count(n_c, "n_c")
    _check_alpha(alpha)
    if n_t < 2 or n_c < 2:
        raise ValueError(f"each group needs at least 2 users for a variance, got {n_t} and {n_c}")
    mean_t, var_t = _mean_variance(sum_t, sum_sq_t, n_t)
    mean_c, var_c = _mean_variance(sum_c, sum_sq_c, n_c)
    diff = mean_t - mean_c
    a, b = var_t / n_t, var_c / n_c
    variance = a + b

    if variance > 0:
        se = math.sqrt(variance)
        df = variance**2 / (a**2 / (n_t - 1) + b**2 / (n_c - 1))
        p_value = _t_two_sided_p(diff / se, df)
        half = _t_critical(alpha, df) * se
    else:  # no variation in either group: the data cannot tell anything but the point
        p_value, half = (1.0 if diff == 0 else 0.0), 0.0
    tau2 = _tau2(mixture_variance, var_t + var_c, alpha)
    av_low, av_high, av_p = _mixture_sprt(diff, variance, tau2, alpha)
    return Lift(
        treated=mean_t,
        control=mean_c,
        absolute=diff,
        relative=diff / mean_c if mean_c else None,
        ci_low=diff - half,
        ci_high=diff + half,
        p_value=p_value,
        always_valid_low=av_low,
        always_valid_high=av_high,
        always_valid_p=av_p,
        metric="mean",
        alpha=alpha,
    )


def mixture_variance_for(unit_variance: float, n_per_group: float, *, alpha: float = 0.05) -> float:
    """The mixture variance tau^2 that makes the confidence sequence narrowest at a horizon.

    `unit_variance` is the per-user variance of the difference, s_t^2 + s_c^2 (for rates,
    p_t(1-p_t) + p_c(1-p_c)); at `n_per_group` users per group the difference has variance
    V* = unit_variance / n_per_group. The half-width of the confidence sequence at variance
    V is sqrt(V (1 + 1/r) (2 ln(1/alpha) + ln(1 + r))) with r = tau^2 / V; it is smallest
    when r solves r = 2 ln(1/alpha) + ln(1 + r) (r = 8.21 at alpha = 0.05), so
    tau^2 = r V*. Choose it before the experiment starts for the strictest guarantee.
    """
    _check_alpha(alpha)
    if not unit_variance > 0 or not n_per_group > 0:
        raise ValueError("unit_variance and n_per_group must be positive")
    return _optimal_ratio(alpha) * unit_variance / n_per_group


def required_sample_size(
    base_rate: float, min_detectable_abs: float, *, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Users per group for the two-sided two-proportion z-test to detect a difference.

    n = (z_{1-alpha/2} sqrt(2 p(1-p)) + z_{power} sqrt(p1(1-p1) + p2(1-p2)))^2 / delta^2
    with p1 = base_rate, p2 = base_rate + delta, p = (p1 + p2)/2, rounded up (Fleiss'
    formula without continuity correction: the pooled variance under the null, the
    unpooled one under the alternative, as the test computes them). Equal groups.
    """
    _check_alpha(alpha)
    if not 0 < power < 1:
        raise ValueError(f"power must be between 0 and 1, got {power}")
    delta = float(min_detectable_abs)
    p1, p2 = float(base_rate), float(base_rate) + delta
    if not 0 < p1 < 1:
        raise ValueError(f"base_rate must be between 0 and 1, got {base_rate}")
    if delta == 0 or not 0 < p2 < 1:
        raise ValueError(
            f"min_detectable_abs must be non-zero and keep base_rate + it between 0 and 1, "
            f"got {min_detectable_abs}"
        )
    mean = (p1 + p2) / 2
    z_alpha = _NORMAL.inv_cdf(1 - alpha / 2)
    z_power = _NORMAL.inv_cdf(power)
    root = z_alpha * math.sqrt(2 * mean * (1 - mean)) + z_power * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2)
    )
    return math.ceil(root**2 / delta**2 - 1e-9)


def verdict(
    lift: Lift,
    n_t: int,
    n_c: int,
    *,
    names: tuple[str, str] = ("B", "A"),
    base_rate: float | None = None,
    min_detectable_abs: float | None = None,
    use: Literal["always_valid", "fixed"] = "always_valid",
) -> str:
    """One plain sentence about `lift`, e.g. "B converts better: +2.1 pts [0.8, 3.4], p = 0.003".

    `use` picks the interval and p-value: "always_valid" (default: people look at reports
    every day, and only the always-valid ones survive that) or "fixed" (only honest when
    the sample size was fixed in advance and this is the one look at it). A difference is
    significant when the interval excludes 0 and p <= lift.alpha.

    With `base_rate` and `min_detectable_abs` (both or neither) the sentence says "not
    enough data yet (n = 212 of ~1,900 needed)" until each group has the users
    `required_sample_size` asks for; unequal groups count as the equal groups with the same
    standard error (n = 2 n_t n_c / (n_t + n_c)). An always-valid difference is reported as
    soon as it is significant (stopping early is what it is for); a fixed-horizon one only
    once the planned sample is reached.
    """
    if use == "always_valid":
        low, high, p = lift.always_valid_low, lift.always_valid_high, lift.always_valid_p
    elif use == "fixed":
        low, high, p = lift.ci_low, lift.ci_high, lift.p_value
    else:
        raise ValueError(f"use must be 'always_valid' or 'fixed', got {use!r}")
    if (base_rate is None) != (min_detectable_abs is None):
        raise ValueError("give both base_rate and min_detectable_abs, or neither")
    treated_name, control_name = names
    significant = (low > 0 or high < 0) and p <= lift.alpha

    if base_rate is not None and min_detectable_abs is not None:
        needed = required_sample_size(base_rate, min_detectable_abs, alpha=lift.alpha)
        n_equal = 2 * n_t * n_c / (n_t + n_c) if n_t + n_c else 0.0
        if n_equal < needed and not (significant and use == "always_valid"):
            if n_t == n_c:
                have = f"n = {n_t:,}"
            else:
                have = (
                    f"{treated_name} {n_t:,} and {control_name} {n_c:,}, "
                    f"as equal groups n = {math.floor(n_equal):,}"
                )
            return f"not enough data yet ({have} of ~{_two_figures(needed):,} needed)"
    if low == high:
        return "not enough data yet (no variation in either group)"

    scale, unit = (100.0, " pts") if lift.metric == "proportion" else (1.0, "")
    decimals = _decimals((high - low) * scale, minimum=1 if lift.metric == "proportion" else 0)
    effect = _signed(lift.absolute * scale, decimals)
    interval = f"[{_plain(low * scale, decimals)}, {_plain(high * scale, decimals)}]"
    if not significant:
        return f"no significant difference: {effect}{unit} {interval}"
    up = lift.absolute > 0
    if lift.metric == "proportion":
        claim = f"{treated_name} converts {'better' if up else 'worse'}"
    else:
        claim = f"{treated_name} is {'higher' if up else 'lower'}"
    return f"{claim}: {effect}{unit} {interval}, p {_p_text(p)}"


# --- always valid: the normal-mixture SPRT ---------------------------------------------------


def _mixture_sprt(diff: float, variance: float, tau2: float, alpha: float) -> tuple[float, ...]:
    """Confidence sequence (low, high) and always-valid p-value for H0: difference = 0.

    With the estimate d ~ N(theta, V) and the mixture theta ~ N(theta0, tau^2), the
    likelihood ratio against theta0 is
        Lambda(theta0) = sqrt(V / (V + tau^2)) exp(tau^2 (d - theta0)^2 / (2 V (V + tau^2))),
    a nonnegative martingale of mean 1 under theta0; by Ville's inequality it ever exceeds
    1/alpha with probability at most alpha. The p-value is min(1, 1/Lambda(0)); the
    interval is every theta0 with Lambda(theta0) < 1/alpha:
        d +- sqrt(V (V + tau^2) / tau^2 (2 ln(1/alpha) + ln((V + tau^2) / V))).
    """
    if variance <= 0:
        p = 1.0 if diff == 0 else 0.0
        return diff, diff, p
    ratio = tau2 / variance
    log_lambda = diff * diff / (2 * variance) * ratio / (1 + ratio) - 0.5 * math.log1p(ratio)
    p = 1.0 if log_lambda <= 0 else math.exp(-log_lambda)
    half = math.sqrt(variance * (1 + 1 / ratio) * (2 * math.log(1 / alpha) + math.log1p(ratio)))
    return diff - half, diff + half, p


def _optimal_ratio(alpha: float) -> float:
    """The r = tau^2 / V minimising the half-width: r = 2 ln(1/alpha) + ln(1 + r)."""
    c = 2 * math.log(1 / alpha)
    r = c
    for _ in range(100):  # a contraction (derivative 1/(1+r) < 1/2), converges fast
        nxt = c + math.log1p(r)
        if abs(nxt - r) < 1e-13 * nxt:
            return nxt
        r = nxt
    return r


def _tau2(given: float | None, unit_variance: float, alpha: float) -> float:
    if given is not None:
        if not given > 0 or math.isinf(given):
            raise ValueError(f"mixture_variance must be a positive number, got {given}")
        return float(given)
    if unit_variance <= 0:  # no variation: any positive tau^2, the interval is the point
        return 1.0
    return mixture_variance_for(unit_variance, DEFAULT_TUNING_N, alpha=alpha)


# --- fixed horizon helpers --------------------------------------------------------------------


def _normal_two_sided_p(diff: float, se: float) -> float:
    if se <= 0:
        return 1.0 if diff == 0 else 0.0
    return math.erfc(abs(diff) / se / math.sqrt(2))


def _t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's T with df degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    t2 = t * t
    return _betainc(df / 2, 0.5, df / (df + t2), t2 / (df + t2))


def _t_critical(alpha: float, df: float) -> float:
    """The c with P(|T| >= c) = alpha: Newton's method from the normal quantile.

    The two-sided tail is convex and decreasing in c > 0 and the start lies left of the
    root (t tails are heavier), so the iterates increase monotonically to it.
    """
    c = _NORMAL.inv_cdf(1 - alpha / 2)
    for _ in range(200):
        step = (_t_two_sided_p(c, df) - alpha) / (2 * _t_density(c, df))
        c += step
        if abs(step) <= 1e-13 * c:
            break
    return c


def _t_density(x: float, df: float) -> float:
    log_norm = _log_gamma_ratio_half(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(x * x / df))


def _log_gamma_ratio_half(a: float) -> float:
    """ln Gamma(a + 1/2) - ln Gamma(a), without the cancellation of two huge lgammas."""
    if a < 1e4:
        return math.lgamma(a + 0.5) - math.lgamma(a)
    # Asymptotic series; the next term is O(a^-5), below 1e-20 here.
    return 0.5 * math.log(a) - 1 / (8 * a) + 1 / (192 * a**3)


def _betainc(a: float, b: float, x: float, y: float) -> float:
    """The regularized incomplete beta function I_x(a, b), with y = 1 - x given exactly.

    Continued fraction (modified Lentz), on I_x(a, b) or 1 - I_y(b, a), whichever
    converges fast. Only b = 1/2 is used here (the Student t tail), which lets the
    normalising Beta function be computed stably for huge a.
    """
    if x <= 0:
        return 0.0
    if y <= 0:
        return 1.0
    if b == 0.5:
        log_beta = math.lgamma(0.5) - _log_gamma_ratio_half(a)  # ln B(a, 1/2)
    else:
        log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    log_x = math.log1p(-y) if x > 0.5 else math.log(x)  # exact near x = 1 (huge df)
    log_y = math.log1p(-x) if y > 0.5 else math.log(y)
    log_front = a * log_x + b * log_y - log_beta
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, y) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    # Converges in O(sqrt(max(a, b))) terms; the cap is far above what is ever needed.
    for m in range(1, 10_000 + int(50 * math.sqrt(a + b))):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1 + aa * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < eps:
            return h
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


# --- input checks and formatting --------------------------------------------------------------


def _count(value: int, name: str) -> int:
    number = int(value)
    if number != value or number < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return number


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")


def _mean_variance(
    total: float | Decimal, total_sq: float | Decimal, n: int
) -> tuple[float, float]:
    total, total_sq = float(total), float(total_sq)
    mean = total / n
    # max(0, ...): rounding can leave a tiny negative when every value is the same.
    return mean, max(0.0, (total_sq - total * mean) / (n - 1))


def _decimals(width: float, *, minimum: int) -> int:
    """Enough decimals to show the interval's width with two significant figures."""
    if not math.isfinite(width) or width <= 0:
        return max(minimum, 2 if minimum == 0 else minimum)
    return min(4, max(minimum, 1 - math.floor(math.log10(width))))


def _signed(value: float, decimals: int) -> str:
    text = f"{value:+.{decimals}f}"
    return text[1:] if float(text) == 0 else text


def _plain(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _p_text(p: float) -> str:
    """Two significant figures ("= 0.012", "= 0.003"), "< 0.001" below that."""
    if p < 0.001:
        return "< 0.001"
    return f"= {min(p, 1.0):.2g}"


def _two_figures(n: int) -> int:
    """Round to two significant figures for a "~1,900"."""
    if n < 100:
        return n
    magnitude = 10 ** (len(str(n)) - 2)
    return round(n / magnitude) * magnitude
