import MoETensor

/// Keys and values of one sequence, per layer, grown as tokens arrive. Keys are stored per KV head
/// ([tokens, kvHeads, keyDim]); MLA layers store their expanded per-head keys and values too.
public final class KVCache: @unchecked Sendable {
    public final class Layer: @unchecked Sendable {
        public let kvHeads: Int
        public let keyDim: Int
        public let valueDim: Int
        public private(set) var count = 0
        public private(set) var keys: [Float] = []
        public private(set) var values: [Float] = []

        /// An empty cache for one layer of `attention`'s shape.
        public convenience init(for attention: any AttentionLayer) {
            let s = attention.cacheShape
            self.init(kvHeads: s.kvHeads, keyDim: s.keyDim, valueDim: s.valueDim)
        }

        init(kvHeads: Int, keyDim: Int, valueDim: Int) {
            self.kvHeads = kvHeads
            self.keyDim = keyDim
            self.valueDim = valueDim
        }

        func copy() -> Layer {
            let l = Layer(kvHeads: kvHeads, keyDim: keyDim, valueDim: valueDim)
            l.keys = keys
            l.values = values
            l.count = count
            return l
        }

        /// Appends `n` tokens of keys [n, kvHeads, keyDim] and values [n, kvHeads, valueDim].
        func append(keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>, tokens n: Int) {
            keys.append(contentsOf: UnsafeBufferPointer(start: k, count: n * kvHeads * keyDim))
            values.append(contentsOf: UnsafeBufferPointer(start: v, count: n * kvHeads * valueDim))
            count += n
        }

        func truncate(to n: Int) {
            precondition(n <= count)
            keys.removeLast((count - n) * kvHeads * keyDim)
            values.removeLast((count - n) * kvHeads * valueDim)
            count = n
        }
    }

    public private(set) var layers: [Layer]

    /// An empty cache shaped for `model`.
    public init(for model: CausalLM) {
        layers = model.layers.map { Layer(for: $0.attention) }
    }

    private init(layers: [Layer]) { self.layers = layers }

    /// An independent copy (e.g. one per answer choice continuing a shared context).
    public func copy() -> KVCache { KVCache(layers: layers.map { $0.copy() }) }

    /// Tokens already processed (the position of the next token).
    public var count: Int { layers.first?.count ?? 0 }

    /// Forgets everything after the first `n` tokens (e.g. to reuse a shared prompt prefix).
    public func truncate(to n: Int) { for l in layers { l.truncate(to: n) } }

    public var byteCount: Int { layers.reduce(0) { $0 + ($1.keys.count + $1.values.count) * 4 } }
}
