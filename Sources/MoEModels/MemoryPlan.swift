import MoETensor

/// How much memory a layer-major pass may use (`--max-memory`): one decoder layer's weights resident at a
/// time (file-backed pages, read from disk when the model is larger than RAM), the embedding and LM head,
/// and the activations of the sequences that go through the layers together. The default is three quarters
/// of the memory available when the command starts.
public struct MemoryBudget: Sendable, Equatable {
    public var bytes: Int
    public init(bytes: Int) { self.bytes = bytes }

    /// Three quarters of MemAvailable (page cache the kernel can reclaim included), or 8 GiB where unknown.
    public static var `default`: MemoryBudget {
        MemoryBudget(bytes: (ResourceMonitor.availableMemory() ?? (8 << 30)) / 4 * 3)
    }
}

/// What a layer-major pass over a model costs in memory, and how many sequences go through the layers
/// together under a budget. Chunking never changes results: every kernel computes a token's values the same
/// way whatever else is in its batch.
public struct MemoryPlan: Sendable {
    /// The largest decoder layer's weights (what must be resident while it runs).
    public let layerBytes: Int
    /// Embedding, final norm and LM head (used at the ends of the pass).
    public let endsBytes: Int
    /// The checkpoint's weight bytes.
    public let modelBytes: Int
    /// Activations held per token of a chunk, at the peak of a layer.
    public let bytesPerToken: Int
    /// Per sequence of length L, on top: attention scores of the heads computed at once (threads · L · L floats).
    let scoreRows: Int
    /// Fixed scratch: a block of logits rows, kernel panels.
    public let fixedBytes: Int

    public init(_ model: CausalLM) {
        let d = model.description
        let h = d.hiddenSize
        var attentionPeak = 0, moePeak = 0
        for layer in model.layers {
            let s = layer.attention.cacheShape
            let cache = s.kvHeads * (s.keyDim + s.valueDim)
            let projected = layer.attention.linears.filter { $0.name != "o" }.reduce(0) { $0 + $1.layer.outFeatures }
            let attnOut = d.heads * s.valueDim
            // x, the normed input, the projections, this layer's keys/values, the attention output, o's output.
            attentionPeak = max(attentionPeak, 3 * h + projected + cache + attnOut)
            switch layer.feedForward {
            case .dense:
                moePeak = max(moePeak, 3 * h + cache)
            case .moe(let b):
                // x, keys/values, the normed input, router logits, the routed sum, one wave of expert outputs and
                // inputs (a fraction of top-k rows each), the shared expert's output and intermediates.
                let wave = min(1.0, Double(MoEBlock.waveSize) / Double(max(1, b.numExperts)))
                let waveFloats = Int((Double(b.topK * 2 * h) * wave).rounded(.up))
                let shared = b.sharedExpert != nil ? h : 0
                moePeak = max(moePeak, 3 * h + cache + b.numExperts + 2 * b.topK + waveFloats + shared)
            }
        }
        bytesPerToken = 4 * max(attentionPeak, moePeak)
        scoreRows = Compute.threads
        let pager = model.pager
        layerBytes = pager?.largestLayerBytes ?? model.layers.map { $0.attention.weightBytes + $0.feedForward.activeWeightBytes }.max() ?? 0
        endsBytes = pager?.otherBytes ?? (model.embedding.byteCount + model.lmHead.weightBytes)
        modelBytes = pager.map { $0.layerBytes.reduce(0, +) + $0.otherBytes } ?? 0
        // A block of logits rows, and an MLP's intermediate activations over one row block (GatedMLP.rowBlock).
        let widestMLP = model.layers.map { l -> Int in
            switch l.feedForward {
            case .dense(let m): return m.intermediateSize
            case .moe(let b): return max(b.sharedExpert?.intermediateSize ?? 0, b.experts.map(\.intermediateSize).max() ?? 0)
            }
        }.max() ?? 0
        fixedBytes = 64 * model.vocabSize * 4 + 2 * GatedMLP.rowBlock * widestMLP * 4 + (16 << 20)
    }

    /// Memory one chunk of sequences of these lengths needs.
    public func bytes(lengths: [Int]) -> Int { bytes(tokens: lengths.reduce(0, +), longest: lengths.max() ?? 0) }

    func bytes(tokens: Int, longest: Int) -> Int {
        layerBytes + endsBytes + fixedBytes + tokens * bytesPerToken + scoreRows * longest * longest * 4
    }

    /// Whether a pass under `budget` streams (drops each layer's pages after use): the weights do not fit.
    public func streams(under budget: MemoryBudget) -> Bool { modelBytes > budget.bytes }

    /// Consecutive chunks of whole sequences, each within `budget`; refuses (saying how much is needed)
    /// when even the longest sequence alone does not fit.
    public func chunks(lengths: [Int], budget: MemoryBudget) throws -> [Range<Int>] {
        let need = bytes(lengths: [lengths.max() ?? 0])
        guard need <= budget.bytes else {
            throw ModelError.invalidInput(String(format: "--max-memory %@ is too small: one layer (%@), the embedding and head (%@) and the activations of one sequence need at least %@",
                                                 formatBytes(budget.bytes), formatBytes(layerBytes), formatBytes(endsBytes), formatBytes(need)))
        }
        var out: [Range<Int>] = []
        var start = 0
        while start < lengths.count {
            var end = start + 1, tokens = lengths[start], longest = lengths[start]
            while end < lengths.count && bytes(tokens: tokens + lengths[end], longest: max(longest, lengths[end])) <= budget.bytes {
                tokens += lengths[end]
                longest = max(longest, lengths[end])
                end += 1
            }
            out.append(start..<end)
            start = end
        }
        return out
    }
}
