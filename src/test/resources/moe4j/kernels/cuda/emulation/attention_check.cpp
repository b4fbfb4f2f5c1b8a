// Runs attention.cu's kernels under host_emulation.h on random inputs and prints, for out, lse, dq, dk
// and dv, the norm of the difference to a float64 reference on the same inputs (rounded to bf16 for the
// tensor-core kernels), the reference's norm and the element count: "name diff norm n".
// Usage: attention_check B S Hq Hkv hd window bf16|f32
#include "host_emulation.h"
#include "kernels.cu"
#include <random>

static void report(const char* name, const std::vector<float>& a, const std::vector<double>& b) {
    double d = 0, n = 0;
    for (size_t i = 0; i < b.size(); i++) {
        d += (a[i] - b[i]) * (a[i] - b[i]);
        n += b[i] * b[i];
    }
    std::printf("%s %.9e %.9e %zu\n", name, std::sqrt(d), std::sqrt(n), b.size());
}

int main(int argc, char** argv) {
    if (argc != 8) return 2;
    int B = std::atoi(argv[1]), S = std::atoi(argv[2]), Hq = std::atoi(argv[3]), Hkv = std::atoi(argv[4]), hd = std::atoi(argv[5]);
    int W = std::atoi(argv[6]);
    bool tensorCores = std::strcmp(argv[7], "bf16") == 0;
    std::mt19937 gen(7);
    std::normal_distribution<float> normal;
    size_t nq = (size_t) B * S * Hq * hd, nk = (size_t) B * S * Hkv * hd, nstat = (size_t) B * Hq * S;
    std::vector<float> q(nq), k(nk), v(nk), go(nq);
    for (auto* t : {&q, &k, &v, &go}) for (auto& x : *t) x = normal(gen);
    auto seen = [&](const std::vector<float>& t) {
        std::vector<float> r = t;
        if (tensorCores) for (auto& x : r) x = fromBf16(toBf16(x));
        return r;
    };
    std::vector<float> qr = seen(q), kr = seen(k), vr = seen(v), gr = seen(go);

    float scale = (float) (1 / std::sqrt((double) hd));
    int group = Hq / Hkv;
    auto qAt = [&](int b, int i, int h) { return (((size_t) b * S + i) * Hq + h) * hd; };
    auto kAt = [&](int b, int j, int g) { return (((size_t) b * S + j) * Hkv + g) * hd; };
    std::vector<double> O(nq), L(nstat), dQ(nq, 0), dK(nk, 0), dV(nk, 0);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < Hq; h++) {
            int g = h / group;
            for (int i = 0; i < S; i++) {
                int lo = W > 0 ? std::max(0, i - W + 1) : 0;
                std::vector<double> p(S, 0);
                double mx = -1e300, sum = 0, D = 0;
                for (int j = lo; j <= i; j++) {
                    double s = 0;
                    for (int d = 0; d < hd; d++) s += (double) qr[qAt(b, i, h) + d] * kr[kAt(b, j, g) + d];
                    p[j] = s * scale;
                    mx = std::max(mx, p[j]);
                }
                for (int j = lo; j <= i; j++) sum += (p[j] = std::exp(p[j] - mx));
                for (int j = lo; j <= i; j++) p[j] /= sum;
                L[((size_t) b * Hq + h) * S + i] = mx + std::log(sum);
                for (int d = 0; d < hd; d++) {
                    double o = 0;
                    for (int j = lo; j <= i; j++) o += p[j] * vr[kAt(b, j, g) + d];
                    O[qAt(b, i, h) + d] = o;
                    D += o * gr[qAt(b, i, h) + d];
                }
                for (int j = lo; j <= i; j++) {
                    double dp = 0;
                    for (int d = 0; d < hd; d++) dp += (double) gr[qAt(b, i, h) + d] * vr[kAt(b, j, g) + d];
                    double ds = p[j] * (dp - D);
                    for (int d = 0; d < hd; d++) {
                        dQ[qAt(b, i, h) + d] += ds * kr[kAt(b, j, g) + d] * scale;
                        dK[kAt(b, j, g) + d] += ds * qr[qAt(b, i, h) + d] * scale;
                        dV[kAt(b, j, g) + d] += p[j] * gr[qAt(b, i, h) + d];
                    }
                }
            }
        }
    }

    std::vector<float> out(nq), lse(nstat), gq(nq), gk(nk), gv(nk), delta(nstat);
    if (tensorCores) {
        auto forward = hd == 64 ? flash_forward_hd64 : flash_forward_hd128;
        auto backwardDq = hd == 64 ? flash_backward_dq_hd64 : flash_backward_dq_hd128;
        auto backwardDkdv = hd == 64 ? flash_backward_dkdv_hd64 : flash_backward_dkdv_hd128;
        unsigned blocks = (S + FLASH_ROWS - 1) / FLASH_ROWS;
        // the host hands these kernels bf16 copies of their inputs
        auto bf16 = [](const std::vector<float>& t) {
            std::vector<unsigned short> r(t.size());
            for (size_t i = 0; i < t.size(); i++) r[i] = toBf16(t[i]);
            return r;
        };
        std::vector<unsigned short> q16 = bf16(q), k16 = bf16(k), v16 = bf16(v), go16 = bf16(go);
        launch(B * Hq, blocks, FLASH_THREADS, [&] { forward(q16.data(), k16.data(), v16.data(), S, Hq, Hkv, W, scale, out.data(), lse.data()); });
        // the row sums from the forward's output, four floats at a time and one at a time (the same sums)
        std::vector<float> deltaNarrow(nstat);
        launch(2, 1, 256, [&] { attention_row_dots(go.data(), out.data(), S, Hq, hd, (long long) nstat, 1, delta.data()); });
        launch(2, 1, 256, [&] { attention_row_dots(go.data(), out.data(), S, Hq, hd, (long long) nstat, 0, deltaNarrow.data()); });
        double worst = 0;
        for (size_t i = 0; i < nstat; i++) worst = std::max(worst, (double) std::fabs(delta[i] - deltaNarrow[i]) / (1 + std::fabs(deltaNarrow[i])));
        if (worst > 1e-5) {
            std::printf("row sums differ between the wide and the narrow path by %.3e\n", worst);
            return 1;
        }
        launch(B * Hq, blocks, FLASH_THREADS, [&] {
            backwardDq(go16.data(), q16.data(), k16.data(), v16.data(), lse.data(), delta.data(), S, Hq, Hkv, W, scale, gq.data());
        });
        launch(B * Hkv, blocks, FLASH_THREADS, [&] {
            backwardDkdv(go16.data(), q16.data(), k16.data(), v16.data(), lse.data(), delta.data(), S, Hq, Hkv, W, scale, gk.data(), gv.data());
        });
    } else {
        unsigned blocks = (S + 3) / 4;
        launch(blocks, B * Hq, 128, [&] { attention_forward(q.data(), k.data(), v.data(), S, Hq, Hkv, hd, W, scale, out.data(), lse.data()); });
        launch(blocks, B * Hq, 128, [&] {
            attention_backward_q(go.data(), q.data(), k.data(), v.data(), lse.data(), S, Hq, Hkv, hd, W, scale, gq.data(), delta.data());
        });
        launch(blocks, B * Hkv, 128, [&] {
            attention_backward_kv(go.data(), q.data(), k.data(), v.data(), lse.data(), delta.data(), S, Hq, Hkv, hd, W, scale, gk.data(),
                                  gv.data());
        });
    }
    report("out", out, O);
    report("lse", lse, L);
    report("dq", gq, dQ);
    report("dk", gk, dK);
    report("dv", gv, dV);
    return 0;
}
