import Foundation
import MoETensor
import MoEModels

/// A training batch: `ids` are B sequences of equal length L; `targets[b][t]` is the token position t must
/// predict (the next token), or `ignoreIndex` for positions outside the loss (prompt, padding, last).
public struct TrainingBatch: Sendable {
    public static let ignoreIndex = -100
    public var ids: [[Int]]
    public var targets: [[Int]]

    public init(ids: [[Int]], targets: [[Int]]) {
        precondition(ids.count == targets.count && zip(ids, targets).allSatisfy { $0.count == $1.count }, "ids and targets differ in shape")
        precondition(Set(ids.map(\.count)).count <= 1, "sequences of a batch must have equal length")
        self.ids = ids; self.targets = targets
    }

    /// HF's convention: `labels` aligned with `ids` (−100 = ignored); position t predicts labels[t + 1].
    public init(ids: [[Int]], labels: [[Int]]) {
        self.init(ids: ids, targets: labels.map { Array($0.dropFirst()) + [TrainingBatch.ignoreIndex] })
    }

    public var seqLen: Int { ids.first?.count ?? 0 }
    public var predicted: Int { targets.reduce(0) { $0 + $1.filter { $0 != TrainingBatch.ignoreIndex }.count } }
}

public struct LossResult: Sendable {
    /// Σ −log p(target) over predicted positions.
    public var sum: Double
    public var tokens: Int
    public var mean: Double { tokens > 0 ? sum / Double(tokens) : 0 }
}

/// Forward and backward of the causal-LM cross-entropy. Gradients of Σ loss / `normalizer` are added to `g`
/// (pass the number of predicted tokens of the whole optimiser step, so accumulated micro-batches average
/// like one batch). With `recompute`, only each layer's input is kept and its activations are recomputed
/// during the backward pass (gradient checkpointing); otherwise every layer's tape is kept.
public enum CausalLMTraining {
    /// Rows of the LM head's logits (and their gradient) held at once in training.
    public static let defaultHeadRows = 256

    public static func check(_ model: CausalLM) throws {
        for (i, l) in model.layers.enumerated() {
            guard l.attention is GroupedQueryAttention || l.attention is LatentAttention else {
                throw TrainingError.unsupported("layer \(i): training supports grouped-query and multi-head latent attention, not \(type(of: l.attention))")
            }
        }
        if model.description.tieWordEmbeddings { throw TrainingError.unsupported("training models with tied embeddings is not supported yet") }
    }

    public static func lossAndGradients(_ model: CausalLM, batch: TrainingBatch, gradients g: Gradients, normalizer: Double,
                                        seed: UInt64 = 0, training: Bool = true, recompute: Bool = true,
                                        headRows: Int = defaultHeadRows, neftuneAlpha: Float = 0) -> LossResult {
        let L = batch.seqLen
        let ids = batch.ids.flatMap { $0 }
        var x = model.embed(ids)
        if training && neftuneAlpha > 0 { addNEFTuneNoise(x, seqLen: L, alpha: neftuneAlpha, seed: mixSeed(seed, 0x4E45_4654)) }
        var inputs: [Tensor] = []
        var tapes: [LayerTape] = []
        for (i, layer) in model.layers.enumerated() {
            let (y, tape) = layerForward(layer, x, seqLen: L, seed: mixSeed(seed, UInt64(i)), training: training)
            if recompute { inputs.append(x) } else { tapes.append(tape) }
            x = y
        }
        let h = model.norm(x)
        let targets = batch.targets.flatMap { $0 }
        let dh = Tensor(zeros: h.shape)
        let inv = Float(1 / max(normalizer, 1e-12))
        // The head runs on blocks of rows, so the logits and their gradient ([rows, vocab] each: 311 MB apiece
        // for 512 tokens of a 152k vocabulary) exist for one block at a time. Rows are independent: one loss per
        // row, summed afterwards in row order (thread-count independent).
        var rowLoss = [Double](repeating: 0, count: targets.count)
        let block = max(1, headRows)
        for lo in stride(from: 0, to: targets.count, by: block) {
            let hi = min(lo + block, targets.count)
            let hb = Tensor(zeros: [hi - lo, h.cols])
            hb.data.update(from: h.data + lo * h.cols, count: hb.count)
            let (logits, headTape) = linearForward(model.lmHead, hb, seed: mixSeed(seed, (1 << 20) + UInt64(lo)), training: training, parallel: true)
            let v = logits.cols
            let dlogits = Tensor(zeros: logits.shape)
            let (lp, dp) = (SendablePointer(logits.data), SendablePointer(dlogits.data))
            rowLoss.withUnsafeMutableBufferPointer { buf in
                let out = SendablePointer(buf.baseAddress!)
                parallelChunks(hi - lo) { range in
                    for r in range {
                        let tgt = targets[lo + r]
                        if tgt == TrainingBatch.ignoreIndex { continue }
                        let row = lp + r * v, drow = dp + r * v
                        var mx = -Float.infinity
                        for j in 0..<v { mx = max(mx, row[j]) }
                        var z = 0.0
                        for j in 0..<v { z += Double(expf(row[j] - mx)) }
                        out[lo + r] = (log(z) + Double(mx)) - Double(row[tgt])
                        for j in 0..<v { drow[j] = Float(Double(expf(row[j] - mx)) / z) * inv }
                        drow[tgt] -= inv
                    }
                }
            }
            let dhb = linearBackward(model.lmHead, headTape, dlogits, g, parallel: true)
            (dh.data + lo * h.cols).update(from: dhb.data, count: dhb.count)
        }
        let loss = rowLoss.reduce(0, +)
        let count = targets.filter { $0 != TrainingBatch.ignoreIndex }.count
        var dx = normBackward(model.norm, x: x, dy: dh, g: g)
        for i in stride(from: model.layers.count - 1, through: 0, by: -1) {
            let tape = recompute ? layerForward(model.layers[i], inputs[i], seqLen: L, seed: mixSeed(seed, UInt64(i)), training: training).1 : tapes[i]
            dx = layerBackward(model.layers[i], tape, dx, seqLen: L, g: g)
            if recompute { inputs.removeLast() } else { tapes.removeLast() }
        }
        if let emb = model.embedding.tensor, let ge = g[emb] {
            let hd = model.hiddenSize
            for (r, id) in ids.enumerated() { addInPlace(ge.data + id * hd, dx.data + r * hd, count: hd) }
        }
        return LossResult(sum: loss, tokens: count)
    }

    /// NEFTune's noise, as HF's `neftune_post_forward_hook`: every embedding value of a [B·L, d] batch gets an
    /// independent uniform draw in ±α/√(L·d). Additive, so the backward pass is unchanged.
    public static func addNEFTuneNoise(_ x: Tensor, seqLen: Int, alpha: Float, seed: UInt64) {
        let bound = Double(alpha) / (Double(seqLen) * Double(x.cols)).squareRoot()
        var g = SeededGenerator(seed: seed)
        for i in 0..<x.count { x.data[i] += Float((g.nextUnit() * 2 - 1) * bound) }
    }

    /// The loss alone (no gradients): Σ −log p over predicted positions.
    public static func loss(_ model: CausalLM, batch: TrainingBatch) -> LossResult {
        let logits = model.forward(batch.ids)
        let v = logits.cols
        var loss = 0.0, count = 0
        for (r, tgt) in batch.targets.flatMap({ $0 }).enumerated() where tgt != TrainingBatch.ignoreIndex {
            let row = logits.data + r * v
            var mx = -Float.infinity
            for j in 0..<v { mx = max(mx, row[j]) }
            var z = 0.0
            for j in 0..<v { z += Double(expf(row[j] - mx)) }
            loss += log(z) + Double(mx) - Double(row[tgt])
            count += 1
        }
        return LossResult(sum: loss, tokens: count)
    }
}
