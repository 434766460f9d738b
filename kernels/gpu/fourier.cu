// CUDA kernels of the "fourier" family: Fourier features with their derivative
// channels, and the backward pass to the frequencies B and the points x.
//
// Same names and math as kernels/reference_nn.py and kernels/cpu/fourier.py (read
// the channel layout (C, J, n0), C in {1, 1 + d, 2 + d}, and the closed forms
// there). Every kernel is a template on the element type T (float, double),
// instantiated by name expression ("fourier_forward<float>") from
// kernels/gpu/_module.py; kernels/gpu/fourier.py launches them.
//
//   psi_jk = s x_j . b_k;   features [x (if keep_x), cos psi, sin psi]
//   d/dx_m: -s B_mk sin, s B_mk cos;   Laplacian: -s^2 |b_k|^2 (cos, sin)
//
//   psib_jk = -sin Cb_0 + cos Sb_0 - sum_m s B_mk (cos Cb_m + sin Sb_m)
//             + s^2 |b_k|^2 (sin Cb_L - cos Sb_L)
//   dL/dB_mk = s sum_j [x_jm psib_jk + cos Sb_m - sin Cb_m]
//              - 2 s^2 B_mk sum_j (cos Cb_L + sin Sb_L)
//   dL/dx_jm = Xb_jm + sum_k s B_mk psib_jk
//
// The argument. The kernels form t = x . b_k in T and take (sin, cos) of s t with
// one sincos call per (point, frequency). When s is 2 pi (use_pi = 1, decided on
// the host in the dtype), they call sincospi(2 t) instead: 2 t is exact and
// sincospi reduces its argument exactly, so neither the rounding of 2 pi to T
// nor that of the product s t enters (in float32, (float)2pi is off by 2.8e-8
// relative, i.e. 2.8e-8 |psi| absolute in sin and cos: ~3e-5 at |psi| = 1e3).
// What remains is the rounding of t itself, inherent in evaluating in T.
//
// Determinism. dL/dB is a sum over points: fixed chunks of FB_CHUNK points give
// per-chunk partial sums (each thread adds its points in order, then a fixed
// shared-memory pass over the warps), and fourier_backward_finish_B adds the
// chunks in a fixed tree, as optim.cu's grad_sumsq does. dL/dx is a sum over
// frequencies: a fixed warp butterfly per 32-frequency tile and, when K > 32,
// per-tile partials added in tile order by fourier_backward_finish_x. No
// atomics anywhere, so results are bit-identical from run to run.
//
// Compiled by NVRTC with CuPy's flags (-arch=sm_XX --std=c++17
// --device-as-default-execution-space -ftz=true); CUDA built-ins only.

typedef long long i64;

// Launch constants: kernels/gpu/fourier.py has the same values (its tests check).
constexpr int FB_LANES = 32;                     // frequencies per block: one per lane
constexpr int FB_WARPS = 8;                      // warps per block: they split the chunk's points
constexpr int FB_THREADS = FB_LANES * FB_WARPS;  // 256
constexpr i64 FB_CHUNK = 256;                    // points per block (the dL/dB partial sums' unit)
constexpr int FB_MAX_D = 4;                      // input dims one backward launch accumulates dL/dB for
constexpr int FINISH_THREADS = 256;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

__device__ __forceinline__ i64 first_index()
{
    return (i64)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ i64 grid_stride()
{
    return (i64)gridDim.x * blockDim.x;
}

__device__ __forceinline__ void sin_cos(float a, float* s, float* c) { sincosf(a, s, c); }
__device__ __forceinline__ void sin_cos(double a, double* s, double* c) { sincos(a, s, c); }
__device__ __forceinline__ void sin_cos_pi(float a, float* s, float* c) { sincospif(a, s, c); }
__device__ __forceinline__ void sin_cos_pi(double a, double* s, double* c) { sincospi(a, s, c); }

// (sin psi, cos psi) for psi = s t; with use_pi (s = 2 pi) through sincospi(2 t).
template <typename T>
__device__ __forceinline__ void sin_cos_arg(T t, T s, int use_pi, T* sn, T* cn)
{
    if (use_pi) {
        sin_cos_pi(T(2) * t, sn, cn);
    } else {
        sin_cos(s * t, sn, cn);
    }
}

// Sum over the 32 lanes of a warp: a fixed xor butterfly (every lane gets the same
// bits: each level adds the same two numbers, in either order). All 32 lanes must call.
template <typename T>
__device__ __forceinline__ T warp_sum(T v)
{
#pragma unroll
    for (int o = FB_LANES / 2; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

// Sum over the FINISH_THREADS threads of a block, fixed tree; every thread must call.
template <typename T>
__device__ __forceinline__ T block_sum(T* shared, T acc)
{
    const int t = threadIdx.x;
    shared[t] = acc;
    __syncthreads();
    for (int half = FINISH_THREADS / 2; half > 0; half >>= 1) {
        if (t < half) {
            shared[t] += shared[t + half];
        }
        __syncthreads();
    }
    const T total = shared[0];
    __syncthreads();  // shared may be reused by the caller
    return total;
}

// ---------------------------------------------------------------------------
// Forward: out (C, J, n0), n0 = off + 2K, off = keep_x ? d : 0.
//
// Work item (j, f), f < W = off + K, item e = j W + f: f < off copies x_jf into the
// kept-x column f of every channel (value x, gradient e_f, Laplacian 0); f = off + k
// evaluates one sincos and writes the cos and sin columns k of every channel.
// Consecutive threads take consecutive items, so a warp's stores to one channel
// hit consecutive addresses. Grid-stride loop; (j, f) advance by the stride's
// quotient and remainder (no division inside the loop).
// ---------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(256)
fourier_forward(const T* __restrict__ x, const T* __restrict__ B, T s, int use_pi, int keep_x,
                T* __restrict__ out, i64 J, i64 d, i64 K, i64 C)
{
    const i64 off = keep_x ? d : 0;
    const i64 W = off + K;
    const i64 n0 = off + 2 * K;
    const i64 cs = J * n0;  // channel stride
    const bool grad = C > 1;
    const bool lap = C == d + 2;
    const i64 e0 = first_index();
    const i64 S = grid_stride();
    const i64 dj = S / W;
    const i64 df = S - dj * W;
    i64 j = e0 / W;
    i64 f = e0 - j * W;
    while (j < J) {
        const i64 row = j * n0;
        const T* xj = x + j * d;
        if (f < off) {
            out[row + f] = xj[f];
            for (i64 c = 1; c < C; ++c) {
                out[c * cs + row + f] = (c == 1 + f) ? T(1) : T(0);
            }
        } else {
            const i64 k = f - off;
            T t = T(0);
            for (i64 m = 0; m < d; ++m) {
                t += xj[m] * B[m * K + k];
            }
            T sn, cn;
            sin_cos_arg(t, s, use_pi, &sn, &cn);
            const i64 oc = row + off + k;  // the cos column; the sin column is oc + K
            out[oc] = cn;
            out[oc + K] = sn;
            if (grad) {
                T nb = T(0);  // s^2 |b_k|^2
                for (i64 m = 0; m < d; ++m) {
                    const T sB = s * B[m * K + k];
                    nb += sB * sB;
                    out[(1 + m) * cs + oc] = -sB * sn;
                    out[(1 + m) * cs + oc + K] = sB * cn;
                }
                if (lap) {
                    out[(d + 1) * cs + oc] = -nb * cn;
                    out[(d + 1) * cs + oc + K] = -nb * sn;
                }
            }
        }
        f += df;
        j += dj;
        if (f >= W) {
            f -= W;
            ++j;
        }
    }
}

// ---------------------------------------------------------------------------
// Backward, pass 1. Grid (n_chunks, n_tiles), FB_THREADS threads: block (c, t)
// takes the points [c FB_CHUNK, (c + 1) FB_CHUNK) and the frequencies
// k = t FB_LANES + lane; warp w takes the points lo + w, lo + w + FB_WARPS, ...
// For each of its points a lane evaluates sincos once and psib, then
//
//  - want_B: adds, for the dims m in [m_lo, m_lo + FB_MAX_D) (a group; the launcher
//    launches one group after another when d > FB_MAX_D), x_jm psib and
//    (cos Sb_m - sin Cb_m), and (group 0) cos Cb_L + sin Sb_L, in registers; at the
//    end the warps' sums are added in warp order and written to
//    partial[c, row, k], rows m (x psib), d + m (explicit), 2d (Laplacian):
//    partial has shape (n_chunks, 2d + 1, K);
//  - want_x (group 0 only): sums s B_mk psib_jk over the warp's 32 frequencies
//    (warp_sum) and lane 0 writes it: straight into gx (+ the kept-x adjoint) when
//    the frequencies fit one tile (n_tiles == 1), else into gxp[t, j, m], shape
//    (n_tiles, J, d), which fourier_backward_finish_x adds in tile order.
// Lanes past K take part in the warp sums with 0.
// ---------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(FB_THREADS)
fourier_backward_partial(const T* __restrict__ x, const T* __restrict__ B, T s, int use_pi,
                         int keep_x, const T* __restrict__ adj, i64 J, i64 d, i64 K, i64 C,
                         i64 m_lo, int want_B, int want_x, T* __restrict__ partial,
                         T* __restrict__ gxp, i64 n_tiles)
{
    __shared__ T red[2 * FB_MAX_D + 1][FB_WARPS][FB_LANES];
    const int lane = threadIdx.x % FB_LANES;
    const int warp = threadIdx.x / FB_LANES;
    const i64 chunk = blockIdx.x;
    const i64 tile = blockIdx.y;
    const i64 k = tile * FB_LANES + lane;
    const bool active = k < K;
    const i64 off = keep_x ? d : 0;
    const i64 n0 = off + 2 * K;
    const i64 cs = J * n0;
    const bool grad = C > 1;
    const bool lap = C == d + 2;
    const i64 m_hi = (m_lo + FB_MAX_D < d) ? m_lo + FB_MAX_D : d;

    T nb = T(0);  // s^2 |b_k|^2, fixed for the lane
    if (active) {
        for (i64 m = 0; m < d; ++m) {
            const T sB = s * B[m * K + k];
            nb += sB * sB;
        }
    }
    T acc_x[FB_MAX_D];
    T acc_g[FB_MAX_D];
#pragma unroll
    for (int q = 0; q < FB_MAX_D; ++q) {
        acc_x[q] = T(0);
        acc_g[q] = T(0);
    }
    T acc_l = T(0);

    const i64 lo = chunk * FB_CHUNK;
    const i64 hi = (lo + FB_CHUNK < J) ? lo + FB_CHUNK : J;
    for (i64 j = lo + warp; j < hi; j += FB_WARPS) {  // warp-uniform: the warp sums below are safe
        const T* xj = x + j * d;
        T pb = T(0);
        if (active) {
            const i64 oc = j * n0 + off + k;  // cos column of channel 0; sin at oc + K
            T t = T(0);
            for (i64 m = 0; m < d; ++m) {
                t += xj[m] * B[m * K + k];
            }
            T sn, cn;
            sin_cos_arg(t, s, use_pi, &sn, &cn);
            pb = cn * adj[oc + K] - sn * adj[oc];
            if (grad) {
                for (i64 m = 0; m < d; ++m) {
                    const T cb = adj[(1 + m) * cs + oc];
                    const T sb = adj[(1 + m) * cs + oc + K];
                    pb -= (s * B[m * K + k]) * (cn * cb + sn * sb);
                }
                if (want_B) {
#pragma unroll
                    for (int q = 0; q < FB_MAX_D; ++q) {
                        const i64 m = m_lo + q;
                        if (m < m_hi) {
                            acc_g[q] += cn * adj[(1 + m) * cs + oc + K] - sn * adj[(1 + m) * cs + oc];
                        }
                    }
                }
            }
            if (lap) {
                const T cl = adj[(d + 1) * cs + oc];
                const T sl = adj[(d + 1) * cs + oc + K];
                pb += nb * (sn * cl - cn * sl);
                acc_l += cn * cl + sn * sl;
            }
            if (want_B) {
#pragma unroll
                for (int q = 0; q < FB_MAX_D; ++q) {
                    const i64 m = m_lo + q;
                    if (m < m_hi) {
                        acc_x[q] += xj[m] * pb;
                    }
                }
            }
        }
        if (want_x) {
            for (i64 m = 0; m < d; ++m) {
                const T v = warp_sum(active ? (s * B[m * K + k]) * pb : T(0));
                if (lane == 0) {
                    if (n_tiles == 1) {
                        gxp[j * d + m] = keep_x ? v + adj[j * n0 + m] : v;
                    } else {
                        gxp[(tile * J + j) * d + m] = v;
                    }
                }
            }
        }
    }

    if (want_B) {  // block-uniform
#pragma unroll
        for (int q = 0; q < FB_MAX_D; ++q) {
            red[q][warp][lane] = acc_x[q];
            red[FB_MAX_D + q][warp][lane] = acc_g[q];
        }
        red[2 * FB_MAX_D][warp][lane] = acc_l;
        __syncthreads();
        // Row q of red is added over the warps, in warp order, by warp q % FB_WARPS.
        const i64 rows = 2 * d + 1;
        for (int q = warp; q < 2 * FB_MAX_D + 1; q += FB_WARPS) {
            i64 row;
            if (q < FB_MAX_D) {
                row = (m_lo + q < m_hi) ? m_lo + q : -1;
            } else if (q < 2 * FB_MAX_D) {
                row = (m_lo + q - FB_MAX_D < m_hi) ? d + m_lo + q - FB_MAX_D : -1;
            } else {
                row = (m_lo == 0) ? 2 * d : -1;
            }
            if (row >= 0 && active) {
                T a = red[q][0][lane];
                for (int w = 1; w < FB_WARPS; ++w) {
                    a += red[q][w][lane];
                }
                partial[(chunk * rows + row) * K + k] = a;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Backward, pass 2 for dL/dB. Grid d K blocks of FINISH_THREADS: block q = m K + k
// adds the n_chunks partial rows m, d + m and 2d of column k (thread i takes the
// chunks i, i + FINISH_THREADS, ... in order, then a fixed tree) and writes
//   gB[m, k] = s (sum x psib + sum explicit) - 2 s^2 B_mk sum (cos Cb_L + sin Sb_L).
// ---------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(FINISH_THREADS)
fourier_backward_finish_B(const T* __restrict__ B, T s, const T* __restrict__ partial,
                          i64 n_chunks, i64 d, i64 K, T* __restrict__ gB)
{
    __shared__ T shared[FINISH_THREADS];
    const i64 q = blockIdx.x;
    const i64 m = q / K;
    const i64 k = q - m * K;
    const i64 rows = 2 * d + 1;
    T a = T(0);
    T l = T(0);
    for (i64 c = threadIdx.x; c < n_chunks; c += FINISH_THREADS) {
        const T* p = partial + c * rows * K;
        a += p[m * K + k] + p[(d + m) * K + k];
        l += p[2 * d * K + k];
    }
    a = block_sum(shared, a);
    l = block_sum(shared, l);
    if (threadIdx.x == 0) {
        gB[q] = s * a - T(2) * s * s * B[q] * l;
    }
}

// ---------------------------------------------------------------------------
// Backward, pass 2 for dL/dx (when K > FB_LANES, or K = 0): grid-stride over the
// J d entries; gx[j, m] = sum_t gxp[t, j, m] (tile order) + the kept-x adjoint.
// ---------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(256)
fourier_backward_finish_x(const T* __restrict__ adj, const T* __restrict__ gxp, i64 J, i64 d,
                          i64 n0, int keep_x, i64 n_tiles, T* __restrict__ gx)
{
    const i64 n = J * d;
    for (i64 e = first_index(); e < n; e += grid_stride()) {
        T g = T(0);
        for (i64 t = 0; t < n_tiles; ++t) {
            g += gxp[t * n + e];
        }
        if (keep_x) {
            const i64 j = e / d;
            g += adj[j * n0 + (e - j * d)];
        }
        gx[e] = g;
    }
}
