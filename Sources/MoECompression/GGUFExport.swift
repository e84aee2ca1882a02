import Foundation
import MoETensor
import MoECheckpoint
import MoEModels
import MoETokenizer

/// `moepress export --gguf`: a checkpoint as one GGUF file llama.cpp loads directly, with the tokenizer metadata
/// that makes llama.cpp produce HF's token ids. Two llama.cpp architectures express MoEPress's families exactly:
/// `llama` for Mixtral (softmax top-k renormalised; q/k rows permuted from HF's rotate-half to llama.cpp's
/// adjacent pairs) and `qwen2moe` for Qwen1.5-MoE (top-k not renormalised, sigmoid-gated shared expert, q/k/v
/// biases). GGUF holds one expert count per model and dense 3-D expert tensors, so unequal counts
/// (`export --uniform` first), low-rank factors (`export --dense` first) and compressed experts are refused.
///
/// Tokenizers: a SentencePiece-style BPE in tokenizer.json (byte fallback, ▁) becomes llama.cpp's `llama` (SPM)
/// vocabulary with score −(merge rank) for every merged token, so its highest-score-first merging is HF's
/// lowest-rank-first; a byte-level BPE with the GPT-2 split becomes `gpt2` with pre-tokenizer `gpt-2`.
public enum GGUFExport {
    public struct Summary: Sendable {
        public var architecture: String
        public var tokenizer: String
        public var tensors: Int
        public var bytes: Int
    }

    public static func write(model dir: URL, output: URL, type: GGUF.TensorType, overwrite: Bool = false) throws -> Summary {
        if FileManager.default.fileExists(atPath: output.path) && !overwrite {
            throw CheckpointError(file: output.path, "already exists (pass --overwrite to replace it)")
        }
        let config = try HFConfig(modelDirectory: dir)
        let model = try ModelRegistry.load(directory: dir)
        let d = model.description
        let arch: String
        switch d.modelType {
        case "mixtral": arch = "llama"
        case "qwen2_moe": arch = "qwen2moe"
        default: throw PruningError.invalid("\(dir.path): GGUF export covers mixtral (llama.cpp's llama) and qwen2_moe (qwen2moe); \(d.modelType) is not written")
        }
        // What llama.cpp's graph for the architecture computes, checked against the model.
        guard let routing = d.routing, routing.scoring == .softmax, routing.groups == 1, routing.scalingFactor == 1 else {
            throw PruningError.invalid("\(dir.path): llama.cpp's \(arch) routes by softmax top-k only")
        }
        if arch == "llama" && !routing.normalizeTopK || arch == "qwen2moe" && routing.normalizeTopK {
            throw PruningError.invalid("\(dir.path): llama.cpp's \(arch) \(arch == "llama" ? "renormalises" : "does not renormalise") the top-k weights; this model \(routing.normalizeTopK ? "does" : "does not")")
        }
        let rope = try config.ropeParameters()
        guard rope.type == "default" else { throw PruningError.invalid("\(dir.path): rope_type \(rope.type) is not written to GGUF here (default RoPE only)") }
        let windows = try ModelRegistry.describe(config).attentionWindows()
        if let w = windows.compactMap({ $0 }).min(), w < d.maxPositions {
            throw PruningError.invalid("\(dir.path): sliding_window \(w): llama.cpp's \(arch) attends to the whole context")
        }
        var counts = Set<Int>()
        for (i, layer) in model.layers.enumerated() {
            guard let b = layer.feedForward.moe else { throw PruningError.invalid("\(dir.path): layer \(i) is dense; llama.cpp's \(arch) makes every layer MoE") }
            guard b.compressedExperts == nil else { throw PruningError.invalid("\(dir.path): compressed experts have no GGUF form") }
            counts.insert(b.numExperts)
            if arch == "qwen2moe" && (b.sharedExpert == nil || b.sharedExpertGate == nil) {
                throw PruningError.invalid("\(dir.path): layer \(i) has no gated shared expert, which llama.cpp's qwen2moe requires")
            }
        }
        guard counts.count == 1 else {
            throw PruningError.invalid("\(dir.path): layers keep \(counts.sorted().map(String.init).joined(separator: "/")) experts; GGUF has one expert count per model (run `moepress export --uniform` first)")
        }
        guard let ga = model.layers.first?.attention as? GroupedQueryAttention, ga.qkNorm.isNone, ga.clip == nil, ga.sinks == nil else {
            throw PruningError.invalid("\(dir.path): only plain grouped-query attention is written to GGUF")
        }
        guard !d.layerNorm else { throw PruningError.invalid("\(dir.path): LayerNorm models are not written to GGUF here") }

        let E = counts.first!, inter = d.layers[0].expertIntermediate, h = d.hiddenSize
        var meta: [(String, GGUF.Value)] = [
            ("general.architecture", .string(arch)), ("general.type", .string("model")),
            ("general.name", .string(dir.lastPathComponent)),
            ("\(arch).block_count", .u32(UInt32(d.numLayers))), ("\(arch).context_length", .u32(UInt32(d.maxPositions))),
            ("\(arch).embedding_length", .u32(UInt32(h))),
            ("\(arch).feed_forward_length", .u32(UInt32(arch == "llama" ? inter : d.layers[0].sharedExpertIntermediate ?? inter))),
            ("\(arch).attention.head_count", .u32(UInt32(d.heads))), ("\(arch).attention.head_count_kv", .u32(UInt32(d.kvHeads))),
            ("\(arch).rope.freq_base", .f32(Float(rope.theta))), ("\(arch).attention.layer_norm_rms_epsilon", .f32(d.rmsNormEps)),
            ("\(arch).expert_count", .u32(UInt32(E))), ("\(arch).expert_used_count", .u32(UInt32(routing.topK))),
        ]
        if arch == "llama" {
            meta += [("\(arch).vocab_size", .u32(UInt32(d.vocabSize))), ("\(arch).rope.dimension_count", .u32(UInt32(d.headDim)))]
        } else {
            meta += [("\(arch).expert_feed_forward_length", .u32(UInt32(inter))),
                     ("\(arch).expert_shared_feed_forward_length", .u32(UInt32(d.layers[0].sharedExpertIntermediate!)))]
            if d.headDim != h / d.heads {
                meta += [("\(arch).attention.key_length", .u32(UInt32(d.headDim))), ("\(arch).attention.value_length", .u32(UInt32(d.headDim)))]
            }
        }
        let fileType: UInt32 = [GGUF.TensorType.f32: 0, .f16: 1, .q8_0: 7, .bf16: 32][type]!
        meta += [("general.file_type", .u32(fileType)), ("general.quantization_version", .u32(2))]

        // Tensors, as llama.cpp's loader lists them. 1-D tensors, norms and routers stay f32 (as its converter writes them).
        var tensors: [GGUF.Tensor] = []
        func vector(_ name: String, _ t: Tensor) { tensors.append(GGUF.Tensor(name: name, shape: [t.count], type: .f32) { _, dst in dst.update(from: t.data, count: t.count) }) }
        func matrix(_ name: String, _ w: WeightMatrix, _ type: GGUF.TensorType, rowOf: (@Sendable (Int) -> Int)? = nil) {
            tensors.append(GGUF.Tensor(name: name, shape: [w.rows, w.cols], type: type) { r, dst in w.widenRow(rowOf?(r) ?? r, into: dst) })
        }
        func stacked(_ name: String, _ ws: [WeightMatrix]) {
            let rows = ws[0].rows
            tensors.append(GGUF.Tensor(name: name, shape: [ws.count, rows, ws[0].cols], type: type) { r, dst in ws[r / rows].widenRow(r % rows, into: dst) })
        }
        func weight(_ l: any LinearLayer, _ what: String) throws -> WeightMatrix {
            guard let dense = l as? DenseLinear else {
                throw PruningError.invalid("\(dir.path): \(what) is stored as low-rank factors, which GGUF cannot hold (run `moepress export --dense` first)")
            }
            return dense.weight
        }
        func bias(_ l: any LinearLayer) -> Tensor? { (l as? DenseLinear)?.bias }
        // llama.cpp's llama rotates adjacent pairs; HF rotates halves: within each head, row j is HF's row j/2 + (j%2)·hd/2.
        let hd = d.headDim
        let permute: @Sendable (Int) -> Int = { j in let head = j / hd, r = j % hd; return head * hd + r / 2 + (r % 2) * (hd / 2) }
        matrix("token_embd.weight", model.embedding, type)
        for (i, layer) in model.layers.enumerated() {
            let a = layer.attention as! GroupedQueryAttention, b = layer.feedForward.moe!, p = "blk.\(i)"
            vector("\(p).attn_norm.weight", layer.inputNorm.weight)
            let perm = arch == "llama" ? permute : nil
            matrix("\(p).attn_q.weight", try weight(a.q, "layer \(i) q"), type, rowOf: perm)
            matrix("\(p).attn_k.weight", try weight(a.k, "layer \(i) k"), type, rowOf: perm)
            matrix("\(p).attn_v.weight", try weight(a.v, "layer \(i) v"), type)
            for (n, l) in [("q", a.q), ("k", a.k), ("v", a.v)] {
                guard let bv = bias(l) else { continue }
                if let perm { let permuted = Tensor(zeros: [bv.count]); for j in 0..<bv.count { permuted.data[j] = bv.data[perm(j)] }; vector("\(p).attn_\(n).bias", permuted) }
                else { vector("\(p).attn_\(n).bias", bv) }
            }
            guard bias(a.o) == nil else { throw PruningError.invalid("\(dir.path): an o_proj bias has no place in llama.cpp's \(arch)") }
            matrix("\(p).attn_output.weight", try weight(a.o, "layer \(i) o"), type)
            vector("\(p).ffn_norm.weight", layer.postAttentionNorm.weight)
            matrix("\(p).ffn_gate_inp.weight", try weight(b.router.linear, "layer \(i) router"), .f32)
            stacked("\(p).ffn_gate_exps.weight", try b.experts.enumerated().map { try weight($1.gate, "layer \(i) expert \($0) gate") })
            stacked("\(p).ffn_up_exps.weight", try b.experts.enumerated().map { try weight($1.up, "layer \(i) expert \($0) up") })
            stacked("\(p).ffn_down_exps.weight", try b.experts.enumerated().map { try weight($1.down, "layer \(i) expert \($0) down") })
            if let s = b.sharedExpert, let g = b.sharedExpertGate {
                let gw = try weight(g, "layer \(i) shared expert gate")
                tensors.append(GGUF.Tensor(name: "\(p).ffn_gate_inp_shexp.weight", shape: [h], type: .f32) { _, dst in gw.widenRow(0, into: dst) })
                matrix("\(p).ffn_gate_shexp.weight", try weight(s.gate, "layer \(i) shared gate"), type)
                matrix("\(p).ffn_up_shexp.weight", try weight(s.up, "layer \(i) shared up"), type)
                matrix("\(p).ffn_down_shexp.weight", try weight(s.down, "layer \(i) shared down"), type)
            }
        }
        vector("output_norm.weight", model.norm.weight)
        matrix("output.weight", d.tieWordEmbeddings ? model.embedding : try weight(model.lmHead, "lm_head"), type)
        for t in tensors where t.type == .q8_0 && t.cols % 32 != 0 {
            throw PruningError.invalid("\(dir.path): \(t.name) has rows of \(t.cols) values; Q8_0 needs multiples of 32 (use bf16 or f16)")
        }
        let vocab = try Vocabulary(directory: dir, config: config)
        meta += vocab.metadata
        if overwrite { try? FileManager.default.removeItem(at: output) }
        try GGUF.write(path: output, metadata: meta, tensors: tensors)
        let size = (try? FileManager.default.attributesOfItem(atPath: output.path)[.size] as? Int) ?? 0
        return Summary(architecture: arch, tokenizer: vocab.kind, tensors: tensors.count, bytes: size)
    }

    /// tokenizer.json as llama.cpp's vocabulary metadata.
    struct Vocabulary {
        var kind = ""
        var metadata: [(String, GGUF.Value)] = []

        init(directory dir: URL, config: HFConfig) throws {
            let tokenizer = try Tokenizer(modelDirectory: dir)
            let v = tokenizer.vocabulary
            let n = v.tokens.count
            let names = v.tokens.enumerated().map { $1 ?? "[PAD\($0)]" }
            let userDefined = Set(tokenizer.addedTokens.filter { !$0.special }.map(\.id))
            func type(_ i: Int) -> Int32 {
                if v.tokens[i] == nil { return 5 }
                if tokenizer.isSpecial(i) { return 3 }
                if userDefined.contains(i) { return 4 }
                return 1
            }
            func id(_ key: String) -> Int? { config.raw[key]?.int ?? config.raw[key]?.array?.first?.int }
            let bos = id("bos_token_id"), eos = id("eos_token_id")
            // Whether HF's encode adds a BOS (the post-processor's template).
            let plain = try tokenizer.encode("a"), special = try tokenizer.encode("a", addSpecialTokens: true)
            let addsBOS = bos != nil && special.count > plain.count && special.first == bos
            switch v.splitting {
            case .sentencePiece:
                // llama.cpp merges the pair whose joined token scores highest, so score = −rank.
                kind = "llama (SentencePiece BPE, scores −merge rank)"
                var scores = [Float](repeating: 0, count: n)
                for m in v.merges.reversed() where m.merged < n { scores[m.merged] = -Float(m.rank) }
                let types = (0..<n).map { i -> Int32 in
                    let t = type(i)
                    if t == 1, let s = v.tokens[i], s.count == 6, s.hasPrefix("<0x"), s.hasSuffix(">") { return 6 }
                    return t
                }
                metadata = [("tokenizer.ggml.model", .string("llama")), ("tokenizer.ggml.pre", .string("default")),
                            ("tokenizer.ggml.tokens", .strings(names)), ("tokenizer.ggml.scores", .f32s(scores)),
                            ("tokenizer.ggml.token_type", .i32s(types))]
                if let unk = v.unknown { metadata.append(("tokenizer.ggml.unknown_token_id", .u32(UInt32(unk)))) }
            case .gpt2ByteLevel:
                kind = "gpt2 (byte-level BPE, pre-tokenizer gpt-2)"
                metadata = [("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.pre", .string("gpt-2")),
                            ("tokenizer.ggml.tokens", .strings(names)), ("tokenizer.ggml.token_type", .i32s((0..<n).map(type))),
                            ("tokenizer.ggml.merges", .strings(v.merges.map { "\($0.left) \($0.right)" }))]
            case .other:
                throw PruningError.invalid("\(dir.path)/tokenizer.json: the tokenizer is neither SentencePiece-style BPE (byte fallback, ▁) nor GPT-2-split byte-level BPE; llama.cpp would tokenize it differently")
            }
            if let bos { metadata.append(("tokenizer.ggml.bos_token_id", .u32(UInt32(bos)))) } else if let eos { metadata.append(("tokenizer.ggml.bos_token_id", .u32(UInt32(eos)))) }
            if let eos { metadata.append(("tokenizer.ggml.eos_token_id", .u32(UInt32(eos)))) }
            metadata.append(("tokenizer.ggml.add_bos_token", .bool(addsBOS)))
            metadata.append(("tokenizer.ggml.add_eos_token", .bool(false)))
        }
    }
}
