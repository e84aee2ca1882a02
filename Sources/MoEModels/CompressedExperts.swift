import MoETensor

/// Compressed Experts (He et al. 2025, methods.md §4): each routed expert e also owns three vectors —
/// θᵍ_e and θᵘ_e [hidden], θᵐ_e [intermediate]. A token runs only its first `mainExperts` top-k experts (in
/// routing-weight order); the remaining auxiliary experts are not run: their vectors, mixed by the aux
/// weights renormalised among themselves (α'_t = w_t / (Σ_aux w + ε)), scale every main expert's gate
/// input, up input and intermediate activation:
/// y = Σ_main w_i · down_i( act(gate_i(h ⊙ c_g)) ⊙ up_i(h ⊙ c_u) ⊙ c_m ).
/// All vectors start at exactly 1, so an untrained CE block is the top-`mainExperts` block.
public struct CompressedExperts: Sendable {
    public var mainExperts: Int
    public var gate: [Tensor]
    public var up: [Tensor]
    public var mid: [Tensor]
    public var epsilon: Float = 1e-6

    public init(mainExperts: Int, gate: [Tensor], up: [Tensor], mid: [Tensor]) {
        precondition(gate.count == up.count && up.count == mid.count, "one vector of each kind per expert")
        self.mainExperts = mainExperts; self.gate = gate; self.up = up; self.mid = mid
    }

    /// Vectors of ones for `experts` experts.
    public init(mainExperts: Int, experts: Int, hidden: Int, intermediate: Int) {
        func ones(_ n: Int) -> Tensor { let t = Tensor(zeros: [n]); t.data.update(repeating: 1, count: n); return t }
        self.init(mainExperts: mainExperts, gate: (0..<experts).map { _ in ones(hidden) },
                  up: (0..<experts).map { _ in ones(hidden) }, mid: (0..<experts).map { _ in ones(intermediate) })
    }

    public var parameterCount: Int { gate.reduce(0) { $0 + $1.count } + up.reduce(0) { $0 + $1.count } + mid.reduce(0) { $0 + $1.count } }

    /// Per token: the aggregates (c_g, c_u, c_m) of its auxiliary experts, and the normalised aux weights.
    public func aggregates(_ d: Router.Decision, hidden h: Int, intermediate i: Int) -> (g: Tensor, u: Tensor, m: Tensor, alpha: [Float]) {
        let k = d.topK, t = d.experts.count / max(k, 1)
        let cg = Tensor(zeros: [t, h]), cu = Tensor(zeros: [t, h]), cm = Tensor(zeros: [t, i])
        var alpha = [Float](repeating: 0, count: t * k)
        for r in 0..<t {
            var sum: Float = 0
            for s in mainExperts..<k { sum += d.weights[r * k + s] }
            for s in mainExperts..<k {
                let a = d.weights[r * k + s] / (sum + epsilon)
                alpha[r * k + s] = a
                let e = Int(d.experts[r * k + s])
                axpy(a, gate[e].data, cg.data + r * h, count: h)
                axpy(a, up[e].data, cu.data + r * h, count: h)
                axpy(a, mid[e].data, cm.data + r * i, count: i)
            }
            if mainExperts == k {   // no auxiliary expert: identity modulation
                (cg.data + r * h).update(repeating: 1, count: h)
                (cu.data + r * h).update(repeating: 1, count: h)
                (cm.data + r * i).update(repeating: 1, count: i)
            }
        }
        return (cg, cu, cm, alpha)
    }
}
