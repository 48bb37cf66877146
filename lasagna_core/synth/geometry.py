"""Rays against the scene's solids (numpy, float32): spheres, boxes, cylinders and capsules are intersected
analytically; the torus is sphere-traced on its exact distance function inside its bounding sphere."""

from __future__ import annotations

import numpy as np

from .scene import Primitive

_F = np.float32


def candidates(prim: Primitive, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Rays (origins o (3, N), unit directions d (3, 1) or (3, N)) that pass within the bounding sphere."""
    c = prim.center.astype(_F)
    ox, oy, oz = o[0] - c[0], o[1] - c[1], o[2] - c[2]
    tb = -(ox * d[0] + oy * d[1] + oz * d[2])
    dist2 = ox * ox + oy * oy + oz * oz - tb * tb
    r = _F(prim.bound)
    return (dist2 < r * r) & (tb + r > 0)


def _sphere_interval(ox, oy, oz, dx, dy, dz, r):
    b = ox * dx + oy * dy + oz * dz
    c = ox * ox + oy * oy + oz * oz - r * r
    disc = b * b - c
    hit = disc >= 0
    h = np.sqrt(np.where(hit, disc, 0))
    return np.where(hit, -b - h, np.inf), np.where(hit, -b + h, -np.inf)


def _slab(o, d, lo, hi):
    """Interval of t where lo <= o + t d <= hi along one axis (d may be ~0)."""
    small = np.abs(d) < 1e-9
    safe = np.where(small, _F(1e-9), d)
    t1, t2 = (lo - o) / safe, (hi - o) / safe
    inside = (o >= lo) & (o <= hi)
    tn = np.where(small, np.where(inside, -np.inf, np.inf), np.minimum(t1, t2))
    tf = np.where(small, np.where(inside, np.inf, -np.inf), np.maximum(t1, t2))
    return tn, tf


def _disc_interval(ox, oy, dx, dy, r):
    """Interval of t inside the infinite cylinder x^2 + y^2 <= r^2 (axis z)."""
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    c = ox * ox + oy * oy - r * r
    parallel = a < 1e-12
    a_safe = np.where(parallel, _F(1.0), a)
    disc = b * b - a * c
    hit = disc >= 0
    h = np.sqrt(np.where(hit, disc, 0))
    tn = np.where(hit, (-b - h) / a_safe, np.inf)
    tf = np.where(hit, (-b + h) / a_safe, -np.inf)
    tn = np.where(parallel, np.where(c <= 0, -np.inf, np.inf), tn)
    tf = np.where(parallel, np.where(c <= 0, np.inf, -np.inf), tf)
    return tn, tf


def _torus_sdf(px, py, pz, major, minor):
    q = np.sqrt(px * px + py * py) - major
    return np.sqrt(q * q + pz * pz) - minor


def _torus_march(ol: np.ndarray, dl: np.ndarray, major: float, minor: float) -> tuple[np.ndarray, np.ndarray]:
    n = ol.shape[1]
    t_in, t_out = _sphere_interval(ol[0], ol[1], ol[2], dl[0], dl[1], dl[2], _F(major + minor))
    t_hit = np.full(n, np.inf, _F)
    act = np.nonzero((t_out > 0) & (t_in <= t_out))[0]
    per_ray = dl.shape[1] > 1
    t = np.maximum(t_in[act], 0).astype(_F)
    oa = ol[:, act]
    da = dl[:, act] if per_ray else dl
    t_end = t_out[act]
    for _ in range(64):
        if act.size == 0:
            break
        p = oa + da * t
        d = _torus_sdf(p[0], p[1], p[2], _F(major), _F(minor))
        hit = d < 5e-4
        t_hit[act[hit]] = t[hit]
        keep = ~hit & (t < t_end)
        act, t, d, oa, t_end = act[keep], t[keep], d[keep], oa[:, keep], t_end[keep]
        if per_ray:
            da = da[:, keep]
        t = t + np.maximum(d, _F(2e-4))
    # Near-misses of the last iterations are grazing rays: close enough counts as a hit.
    if act.size:
        p = oa + da * t
        close = _torus_sdf(p[0], p[1], p[2], _F(major), _F(minor)) < 2e-3
        t_hit[act[close]] = t[close]
    hit = np.isfinite(t_hit)
    return np.where(hit, t_hit, np.inf).astype(_F), np.where(hit, t_hit, -np.inf).astype(_F)


def intersect(prim: Primitive, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit t of rays o + t d (world, (3, N); d (3, 1) or (3, N)) through the solid; tn > tf: miss."""
    rot = prim.rotation.astype(_F)
    ol = rot.T @ (o - prim.center.astype(_F)[:, None])
    dl = rot.T @ d
    ox, oy, oz = ol
    dx, dy, dz = dl
    s = [_F(v) for v in prim.size]
    if prim.kind == "sphere":
        return _sphere_interval(ox, oy, oz, dx, dy, dz, s[0])
    if prim.kind == "box":
        tn, tf = _slab(ox, dx, -s[0], s[0])
        for oc, dc, b in ((oy, dy, s[1]), (oz, dz, s[2])):
            a, c = _slab(oc, dc, -b, b)
            tn, tf = np.maximum(tn, a), np.minimum(tf, c)
        return tn, tf
    if prim.kind == "cylinder":
        tn, tf = _disc_interval(ox, oy, dx, dy, s[0])
        a, c = _slab(oz, dz, -s[1], s[1])
        return np.maximum(tn, a), np.minimum(tf, c)
    if prim.kind == "capsule":
        r, h = s
        tn, tf = _disc_interval(ox, oy, dx, dy, r)
        a, c = _slab(oz, dz, -h, h)
        tn, tf = np.maximum(tn, a), np.minimum(tf, c)
        tf = np.where(tn <= tf, tf, -np.inf)
        tn = np.where(tn <= tf, tn, np.inf)
        for cz in (-h, h):  # the union of convex pieces of a convex solid is one interval
            a, c = _sphere_interval(ox, oy, oz - cz, dx, dy, dz, r)
            tn, tf = np.minimum(tn, a), np.maximum(tf, c)
        return tn, tf
    if prim.kind == "torus":
        return _torus_march(ol, dl if dl.ndim == 2 else dl[:, None], s[0], s[1])
    raise ValueError(prim.kind)


def normal(prim: Primitive, p: np.ndarray) -> np.ndarray:
    """World-space unit normals at points p (3, N) on the surface."""
    rot = prim.rotation.astype(_F)
    pl = rot.T @ (p - prim.center.astype(_F)[:, None])
    x, y, z = pl
    s = [_F(v) for v in prim.size]
    if prim.kind == "sphere":
        n = pl
    elif prim.kind == "box":
        q = np.abs(pl) / np.array(s, _F)[:, None]
        axis = np.argmax(q, axis=0)
        n = np.zeros_like(pl)
        cols = np.arange(pl.shape[1])
        n[axis, cols] = np.sign(pl[axis, cols])
    elif prim.kind == "cylinder":
        rho = np.sqrt(x * x + y * y)
        cap = np.abs(np.abs(z) - s[1]) < np.abs(rho - s[0])
        n = np.where(cap[None], np.stack([np.zeros_like(z), np.zeros_like(z), np.sign(z)]), np.stack([x, y, np.zeros_like(z)]))
    elif prim.kind == "capsule":
        n = np.stack([x, y, z - np.clip(z, -s[1], s[1])])
    elif prim.kind == "torus":
        rho = np.maximum(np.sqrt(x * x + y * y), _F(1e-6))
        k = 1 - s[0] / rho
        n = np.stack([x * k, y * k, z])
    else:
        raise ValueError(prim.kind)
    n = rot @ n
    return (n / np.maximum(np.sqrt((n * n).sum(axis=0)), _F(1e-12))).astype(_F)
