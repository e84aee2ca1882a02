import MoETensor

/// The one Mixture-of-Experts block every family shares: a router, routed experts, and an optional
/// shared expert (always on; optionally scaled by a sigmoid gate, as in Qwen2-MoE). Compression
/// methods operate on this type and its properties, never on a family name.
public struct MoEBlock: Sendable {
    public var router: Router
    public var experts: [GatedMLP]
    public var sharedExpert: GatedMLP?
    /// H → 1 linear whose sigmoid scales the shared expert's output per token (Qwen2-MoE).
    public var sharedExpertGate: (any LinearLayer)?
    /// Experts allowed to be routed to (nil: all). Masking an expert's logit to −∞ before the softmax is
    /// exactly what deleting its router row does, so pruning candidates are evaluated with this.
    public var expertMask: [Bool]?
    /// Compressed Experts: only the first `mainExperts` of each token's top-k run, modulated by the others'
    /// vectors (see `CompressedExperts`).
    public var compressedExperts: CompressedExperts?

    public init(router: Router, experts: [GatedMLP], sharedExpert: GatedMLP? = nil, sharedExpertGate: (any LinearLayer)? = nil) {
        precondition(router.numExperts == experts.count, "router has \(router.numExperts) rows for \(experts.count) experts")
        self.router = router
        self.experts = experts
        self.sharedExpert = sharedExpert
        self.sharedExpertGate = sharedExpertGate
    }

    public var routing: Routing { router.routing }
    public var numExperts: Int { experts.count }
    public var topK: Int { router.routing.topK }
    public var hasSharedExpert: Bool { sharedExpert != nil }
    public var hiddenSize: Int { router.weight.shape[1] }

    public var parameterCount: Int {
        router.weight.count + experts.reduce(0) { $0 + $1.parameterCount }
            + (sharedExpert?.parameterCount ?? 0) + (sharedExpertGate?.parameterCount ?? 0) + (compressedExperts?.parameterCount ?? 0)
    }

    /// Experts run per token: top-k, or the main experts of a compressed-experts block.
    public var runExperts: Int { compressedExperts?.mainExperts ?? topK }

    /// Parameters touched per token: router, the routed experts run (taking the mean expert size) and the shared expert.
    public var activeParameterCount: Int {
        let meanExpert = experts.isEmpty ? 0 : experts.reduce(0) { $0 + $1.parameterCount } / experts.count
        return router.weight.count + runExperts * meanExpert + (sharedExpert?.parameterCount ?? 0) + (sharedExpertGate?.parameterCount ?? 0)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        forward(x, decision: Profiler.measure("router") { route(x) })
    }

    /// Routing with `expertMask` applied.
    public func route(_ x: Tensor) -> Router.Decision {
        let logits = router.linear.callAsFunction(x)
        return router.decide(logits: logits, allowed: expertMask)
    }

    /// The block output for a given routing decision.
    public func forward(_ x: Tensor, decision: Router.Decision) -> Tensor {
        let out = Profiler.measure("experts") { routedOutput(x, decision: decision) }
        if let s = sharedOutput(x) { out.add(s) }
        return out
    }

    /// The shared expert's contribution (scaled per token by sigmoid(gate·x) when gated), or nil.
    public func sharedOutput(_ x: Tensor) -> Tensor? {
        guard let shared = sharedExpert else { return nil }
        let s = shared(x)
        if let gate = sharedExpertGate {
            let g = gate(x)
            let h = hiddenSize
            for t in 0..<x.rows {
                let w = sigmoid(g.data[t])
                for j in 0..<h { s.data[t * h + j] *= w }
            }
        }
        return s
    }

    /// Tokens grouped by expert: for expert e, the (token, weight) pairs in token order (main experts only
    /// in a compressed-experts block).
    public func assignments(_ d: Router.Decision) -> [[(token: Int, weight: Float)]] {
        var lists = [[(token: Int, weight: Float)]](repeating: [], count: numExperts)
        let t = d.experts.count / max(d.topK, 1)
        for i in 0..<t {
            for s in 0..<min(runExperts, d.topK) {
                lists[Int(d.experts[i * d.topK + s])].append((i, d.weights[i * d.topK + s]))
            }
        }
        return lists
    }

    /// Per active expert: the tokens routed to it, their routing weights, and the expert's (unweighted)
    /// outputs on them [n, hidden]. Experts run in parallel. Calibration statistics and the routed output
    /// are both built from this.
    public func expertOutputs(_ x: Tensor, decision d: Router.Decision) -> [Int: (tokens: [Int], weights: [Float], outputs: Tensor)] {
        let h = hiddenSize
        let lists = assignments(d)
        // Largest first, so the cores finish together.
        let active = (0..<numExperts).filter { !lists[$0].isEmpty }.sorted { (lists[$0].count, $1) > (lists[$1].count, $0) }
        var outputs = [Tensor?](repeating: nil, count: numExperts)
        let serialInside = active.count > 1
        let ce = compressedExperts.map { $0.aggregates(d, hidden: h, intermediate: experts[0].intermediateSize) }
        outputs.withUnsafeMutableBufferPointer { buf in
            let results = SendablePointer(buf.baseAddress!)
            parallelFor(active.count) { a in
                let e = active[a]
                let list = lists[e]
                let xe = Tensor(zeros: [list.count, h])
                for (r, item) in list.enumerated() { (xe.data + r * h).update(from: x.data + item.token * h, count: h) }
                let ye = Tensor(zeros: [list.count, h])
                if let ce {
                    let inter = experts[e].intermediateSize
                    let xg = Tensor(zeros: [list.count, h]), xu = Tensor(zeros: [list.count, h]), cm = Tensor(zeros: [list.count, inter])
                    for (r, item) in list.enumerated() {
                        for j in 0..<h {
                            xg.data[r * h + j] = xe.data[r * h + j] * ce.g.data[item.token * h + j]
                            xu.data[r * h + j] = xe.data[r * h + j] * ce.u.data[item.token * h + j]
                        }
                        (cm.data + r * inter).update(from: ce.m.data + item.token * inter, count: inter)
                    }
                    experts[e].apply(gateInput: xg.data, upInput: xu.data, midScale: cm.data, rows: list.count, into: ye.data, parallel: !serialInside)
                } else {
                    experts[e].apply(xe.data, rows: list.count, into: ye.data, parallel: !serialInside)
                }
                results[e] = ye
            }
        }
        var out: [Int: (tokens: [Int], weights: [Float], outputs: Tensor)] = [:]
        for e in active { out[e] = (lists[e].map(\.token), lists[e].map(\.weight), outputs[e]!) }
        return out
    }

    /// Σ over chosen experts of weight × expert(x), summed in expert order (as HF's index_add_ does), so
    /// the result is deterministic whatever the thread count.
    public func routedOutput(_ x: Tensor, decision d: Router.Decision) -> Tensor {
        let h = hiddenSize
        let per = expertOutputs(x, decision: d)
        let out = Tensor(zeros: x.shape)
        for e in per.keys.sorted() {
            let (tokens, weights, ye) = per[e]!
            for (r, t) in tokens.enumerated() { axpy(weights[r], ye.data + r * h, out.data + t * h, count: h) }
        }
        return out
    }
}

/// What follows attention in a decoder layer: a dense gated MLP or an MoE block.
public enum FeedForward: Sendable {
    case dense(GatedMLP)
    case moe(MoEBlock)

    public func callAsFunction(_ x: Tensor) -> Tensor {
        switch self {
        case .dense(let mlp): return mlp(x)
        case .moe(let block): return block(x)
        }
    }

    public var moe: MoEBlock? { if case .moe(let b) = self { return b } else { return nil } }

    public var parameterCount: Int {
        switch self {
        case .dense(let m): return m.parameterCount
        case .moe(let b): return b.parameterCount
        }
    }

    public var activeParameterCount: Int {
        switch self {
        case .dense(let m): return m.parameterCount
        case .moe(let b): return b.activeParameterCount
        }
    }
}
