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
        precondition(router.hiddenSize == (experts.first?.hiddenSize ?? router.hiddenSize), "router and experts differ in hidden size")
        self.router = router
        self.experts = experts
        self.sharedExpert = sharedExpert
        self.sharedExpertGate = sharedExpertGate
    }

    public var routing: Routing { router.routing }
    public var numExperts: Int { experts.count }
    public var topK: Int { router.routing.topK }
    public var hasSharedExpert: Bool { sharedExpert != nil }
    public var hiddenSize: Int { router.hiddenSize }

    public var parameterCount: Int {
        router.linear.parameterCount + experts.reduce(0) { $0 + $1.parameterCount }
            + (sharedExpert?.parameterCount ?? 0) + (sharedExpertGate?.parameterCount ?? 0) + (compressedExperts?.parameterCount ?? 0)
    }

    /// Experts run per token: top-k, or the main experts of a compressed-experts block.
    public var runExperts: Int { compressedExperts?.mainExperts ?? topK }

    /// Parameters touched per token: router, the routed experts run (taking the mean expert size) and the shared expert.
    public var activeParameterCount: Int {
        let meanExpert = experts.isEmpty ? 0 : experts.reduce(0) { $0 + $1.parameterCount } / experts.count
        return router.linear.parameterCount + runExperts * meanExpert + (sharedExpert?.parameterCount ?? 0) + (sharedExpertGate?.parameterCount ?? 0)
    }

    /// Bytes of weights one token reads: router, `runExperts` experts of mean size, shared expert and its gate.
    public var activeWeightBytes: Int {
        let meanExpert = experts.isEmpty ? 0 : experts.reduce(0) { $0 + $1.weightBytes } / experts.count
        return router.linear.weightBytes + runExperts * meanExpert + (sharedExpert?.weightBytes ?? 0) + (sharedExpertGate?.weightBytes ?? 0)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { forward(x, observer: nil) }

    /// The block output, with `observer` shown the routing and every expert's outputs as they are computed.
    public func forward(_ x: Tensor, observer: LayerObserver?) -> Tensor {
        let d = Profiler.measure("router") { route(x) }
        observer?.routing?(d)
        return forward(x, decision: d, expert: observer?.expert)
    }

    /// Routing with `expertMask` applied.
    public func route(_ x: Tensor) -> Router.Decision {
        let logits = router.linear.callAsFunction(x)
        return router.decide(logits: logits, allowed: expertMask)
    }

    /// The block output for a given routing decision.
    public func forward(_ x: Tensor, decision: Router.Decision,
                        expert: ((_ expert: Int, _ tokens: [Int], _ weights: [Float], _ outputs: Tensor) -> Void)? = nil) -> Tensor {
        let out = Profiler.measure("experts") { routedOutput(x, decision: decision, expert: expert) }
        if let s = sharedOutput(x) {
            ResourceMonitor.shared.notePeak()
            out.add(s)
        }
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

    /// Experts computed together in one parallel wave: enough to keep every core busy and balanced, few
    /// enough that their outputs (what a wave holds at once) stay a fraction of the chunk's activations.
    public static let waveSize = 16

    /// Calls `body(expert, tokens, weights, outputs)` for every expert with tokens, in ascending expert order:
    /// the tokens routed to it, their routing weights, and the expert's (unweighted) outputs on them [n,
    /// hidden]. Experts run in parallel waves of consecutive ids (largest first inside a wave, so the cores
    /// finish together); a wave's outputs are released once `body` has seen them. Calibration statistics and
    /// the routed output are both built on this.
    public func forEachExpertOutput(_ x: Tensor, decision d: Router.Decision,
                                    _ body: (_ expert: Int, _ tokens: [Int], _ weights: [Float], _ outputs: Tensor) throws -> Void) rethrows {
        let h = hiddenSize
        let lists = assignments(d)
        let active = (0..<numExperts).filter { !lists[$0].isEmpty }
        let ce = compressedExperts.map { $0.aggregates(d, hidden: h, intermediate: experts[0].intermediateSize) }
        var w0 = 0
        while w0 < active.count {
            let wave = Array(active[w0..<min(active.count, w0 + Self.waveSize)])
            let order = wave.sorted { (lists[$0].count, $1) > (lists[$1].count, $0) }
            let serialInside = order.count > 1
            var outputs = [Tensor?](repeating: nil, count: wave.count)
            outputs.withUnsafeMutableBufferPointer { buf in
                let results = SendablePointer(buf.baseAddress!)
                parallelFor(order.count) { a in
                    let e = order[a]
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
                    results[wave.firstIndex(of: e)!] = ye
                }
            }
            ResourceMonitor.shared.notePeak()
            for (i, e) in wave.enumerated() { try body(e, lists[e].map(\.token), lists[e].map(\.weight), outputs[i]!) }
            w0 += wave.count
        }
    }

    /// Per active expert: the tokens routed to it, their routing weights and the expert's outputs on them
    /// (all held at once; `forEachExpertOutput` streams them).
    public func expertOutputs(_ x: Tensor, decision d: Router.Decision) -> [Int: (tokens: [Int], weights: [Float], outputs: Tensor)] {
        var out: [Int: (tokens: [Int], weights: [Float], outputs: Tensor)] = [:]
        forEachExpertOutput(x, decision: d) { e, t, w, y in out[e] = (t, w, y) }
        return out
    }

    /// Σ over chosen experts of weight × expert(x), summed in expert order (as HF's index_add_ does), so
    /// the result is deterministic whatever the thread count, and a token's sum does not depend on the
    /// other tokens of the batch.
    public func routedOutput(_ x: Tensor, decision d: Router.Decision,
                             expert observe: ((_ expert: Int, _ tokens: [Int], _ weights: [Float], _ outputs: Tensor) -> Void)? = nil) -> Tensor {
        let h = hiddenSize
        let out = Tensor(zeros: x.shape)
        forEachExpertOutput(x, decision: d) { e, tokens, weights, ye in
            observe?(e, tokens, weights, ye)
            for (r, t) in tokens.enumerated() { axpy(weights[r], ye.data + r * h, out.data + t * h, count: h) }
        }
        return out
    }
}

/// What follows attention in a decoder layer: a dense gated MLP or an MoE block.
public enum FeedForward: Sendable {
    case dense(GatedMLP)
    case moe(MoEBlock)

    public func callAsFunction(_ x: Tensor, observer: LayerObserver? = nil) -> Tensor {
        switch self {
        case .dense(let mlp): return mlp(x)
        case .moe(let block): return block.forward(x, observer: observer)
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

    public var activeWeightBytes: Int {
        switch self {
        case .dense(let m): return m.weightBytes
        case .moe(let b): return b.activeWeightBytes
        }
    }
}
