"""Theory's numbers from a kernel's extreme eigenvalues: smoothness, PL constant, step sizes,
the one-step rate bound, and SGD's nonconvex gradient bound (docs/theory.md derives each).

Every function takes the loss scale α of `L = ‖α h − y‖² / (n α²)` (α = 1 is the plain MSE);
the kernel K is that of the output f = α h, so β and μ carry a 1/α².
"""

from __future__ import annotations


def smoothness(lambda_max: float, n: int, alpha: float = 1.0) -> float:
    """β = 2 λ_max(K) / (n α²): the MSE's smoothness near W (exact for the linear net)."""
    return 2.0 * lambda_max / (n * alpha**2)


def theory_lr(lambda_max: float, n: int, alpha: float = 1.0) -> float:
    """The theory step η = 1/β = n α² / (2 λ_max(K))."""
    return n * alpha**2 / (2.0 * lambda_max)


def cross_entropy_lr(lambda_max_full: float, n: int) -> float:
    """The theory step for the mean cross-entropy, 1/β = 2n / λ_max(K): β = λ_max(K)/(2n)
    bounds the Gauss–Newton curvature, K the full (n·k, n·k) kernel of the k logits, since the
    softmax's Hessian diag(p) − p pᵀ has eigenvalues ≤ 1/2 (Gershgorin: 2 p_a (1 − p_a))."""
    return 2.0 * n / lambda_max_full


def stability_lr(lambda_max: float, n: int, alpha: float = 1.0) -> float:
    """GD's stability limit 2/β = n α² / λ_max(K): on a quadratic GD diverges iff lr exceeds it."""
    return 2.0 * theory_lr(lambda_max, n, alpha)


def logistic_smoothness(X, weight_decay: float = 0.0) -> float:
    """β = (1/(4n)) Σ_i ‖x_i‖² + λ for X (n, d): the smoothness of the regularised logistic loss
    (1/n) Σ log(1 + e^{−y_i⟨w, x_i⟩}) + (λ/2)‖w‖² that the lecture notes use. Its Hessian is
    (1/n) Xᵀ diag(s_i) X + λ I with s_i = σ(z_i)(1 − σ(z_i)) ≤ 1/4, so λ_max ≤ λ_max(XᵀX)/(4n)
    + λ ≤ tr(XᵀX)/(4n) + λ; the trace form is also the mean of the per-example constants
    ‖x_i‖²/4 + λ, the one that governs SGD on one example at a time."""
    n = X.shape[0]
    return float(X.double().pow(2).sum()) / (4.0 * n) + float(weight_decay)


def pl_mu(lambda_min: float, n: int, alpha: float = 1.0) -> float:
    """μ = 4 λ_min(K) / (n α²): ‖∇L‖² ≥ μ L holds exactly at every iterate."""
    return 4.0 * lambda_min / (n * alpha**2)


def rate_bound(
    lambda_min: float, lambda_max: float, n: int, lr: float, alpha: float = 1.0
) -> float:
    """The corrected per-step bound on L_{t+1}/L_t for one full-batch GD step of size lr from W_t.

    The descent lemma gives L_{t+1} ≤ L_t − g ‖∇L‖² with g = lr (1 − β lr / 2). Below the
    stability limit (g ≥ 0) the PL inequality ‖∇L‖² ≥ μ L gives 1 − μ g; above it (g < 0)
    ‖∇L‖² ≤ 2β L gives 1 − 2β g = (1 − β lr)², a bound above 1: no descent is promised.
    At lr = 1/β this is 1 − μ/(2β) = 1 − λ_min/λ_max. β, μ from K_t.
    """
    beta = smoothness(lambda_max, n, alpha)
    mu = pl_mu(max(lambda_min, 0.0), n, alpha)
    g = lr * (1.0 - beta * lr / 2.0)
    return 1.0 - mu * g if g >= 0 else 1.0 - 2.0 * beta * g


def rate_slide(lambda_min: float, lambda_max: float) -> float:
    """The lecture notes' constant 1 − μ/β = 1 − 2 λ_min/λ_max, claimed for lr = 1/β; the notes
    drop a factor 2 of the descent lemma (docs/theory.md), so it is not a bound."""
    return 1.0 - 2.0 * lambda_min / lambda_max


def mean_example_grad_sq(r, K_diag, alpha: float = 1.0) -> float:
    """(1/n) Σ_i ‖∇ℓ_i‖² for the MSE's per-example losses ℓ_i = r_i² / α² (r = f − y (n,), f the
    output α h): ∇ℓ_i = 2 r_i ∇f_i / α², so ‖∇ℓ_i‖² = 4 r_i² K_ii / α⁴, K_ii = ‖∇f_i‖² (n,).
    It is E‖g‖² of a one-example stochastic gradient, and bounds that of any minibatch."""
    r, k = r.double(), K_diag.double()
    return float((4.0 * r.pow(2) * k).mean()) / alpha**4


def sgd_grad_bound(R: float, beta: float, grad_sq: float, steps: int) -> float:
    """The lecture notes' bound 2 √(R β L² / T) on min_k E‖∇L(W_k)‖² after T = `steps` SGD steps,
    R = L(W_0) − L*, β the smoothness, L² = `grad_sq` the stochastic gradients' second moment.
    docs/theory.md: it holds for the step √(R/(β L² T)) (which gives 1.5 √(R β L² / T)), not for
    the notes' R/(β L² T)."""
    return 2.0 * (R * beta * grad_sq / steps) ** 0.5


def sgd_descent_bound(R: float, beta: float, grad_sq: float, sum_lr: float, sum_lr_sq: float):
    """What the descent lemma gives for the steps actually taken: min_k E‖∇L(W_k)‖² ≤
    (R + (β L²/2) Σ γ_k²) / Σ γ_k; at a constant γ over T steps, R/(γT) + β γ L²/2."""
    return (R + 0.5 * beta * grad_sq * sum_lr_sq) / sum_lr


def sgd_nonconvex_lr(R: float, beta: float, grad_sq: float, steps: int, rule: str) -> float:
    """SGD's constant step for T = `steps` steps: "nonconvex" √(R/(β L² T)), the step the bound
    2 √(R β L² / T) holds for; "nonconvex_slide" R/(β L² T), the lecture notes' (docs/theory.md)."""
    x = R / (beta * grad_sq * steps)
    return x**0.5 if rule == "nonconvex" else x
