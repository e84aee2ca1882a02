import MoETensor

/// The one way to walk a model: every linear layer and every parameter under a logical name that does not
/// depend on the family's checkpoint spelling (`CheckpointNames` maps them to checkpoint names):
/// `embed`, `norm`, `lm_head`; per layer `layers.L.input_norm`, `layers.L.post_norm`, `layers.L.attn.<name>`
/// (q, k, v, o; MLA q or q_a/q_b, kv_a, kv_b, o), its norms `layers.L.attn.<q_norm|k_norm|q_a_norm|kv_a_norm>` and sinks,
/// `layers.L.mlp.{gate,up,down}` (dense layers), `layers.L.moe.router`, `layers.L.moe.experts.E.{gate,up,down}`,
/// `layers.L.moe.shared.{gate,up,down}`, `layers.L.moe.shared_gate`, compressed-expert vectors
/// `layers.L.moe.experts.E.ce_{gate,up,mid}`. A linear layer's parameters add their suffix (`.bias`,
/// `.lowrank_a/_b`, `.lora_A/_B`). `replaceLinears` is mlx-swift-lm's `replaceLayers`: how adapters are
/// attached and merged, and how layers are made trainable.
extension CausalLM {
    /// Every linear layer with its logical name, in model order.
    public func forEachLinear(_ body: (_ name: String, _ layer: any LinearLayer) throws -> Void) rethrows {
        for (l, layer) in layers.enumerated() {
            let p = "layers.\(l)."
            for (n, lin) in layer.attention.linears { try body(p + "attn." + n, lin) }
            switch layer.feedForward {
            case .dense(let m): for (k, lin) in m.projections { try body(p + "mlp." + k, lin) }
            case .moe(let b):
                try body(p + "moe.router", b.router.linear)
                for (e, x) in b.experts.enumerated() { for (k, lin) in x.projections { try body(p + "moe.experts.\(e).\(k)", lin) } }
                if let s = b.sharedExpert { for (k, lin) in s.projections { try body(p + "moe.shared." + k, lin) } }
                if let g = b.sharedExpertGate { try body(p + "moe.shared_gate", g) }
            }
        }
        if !description.tieWordEmbeddings { try body("lm_head", lmHead) }
    }

    /// Replaces every linear layer by `f(name, layer)` (same names as `forEachLinear`).
    public func replaceLinears(_ f: (_ name: String, _ layer: any LinearLayer) throws -> any LinearLayer) rethrows {
        for l in layers.indices {
            let p = "layers.\(l)."
            var layer = layers[l]
            layer.attention = try layer.attention.replacingLinears { try f(p + "attn." + $0, $1) }
            switch layer.feedForward {
            case .dense(let m): layer.feedForward = .dense(try m.mapProjections { try f(p + "mlp." + $0, $1) })
            case .moe(var b):
                b.router.linear = try f(p + "moe.router", b.router.linear)
                b.experts = try b.experts.enumerated().map { e, x in try x.mapProjections { try f(p + "moe.experts.\(e).\($0)", $1) } }
                b.sharedExpert = try b.sharedExpert.map { s in try s.mapProjections { try f(p + "moe.shared.\($0)", $1) } }
                b.sharedExpertGate = try b.sharedExpertGate.map { try f(p + "moe.shared_gate", $0) }
                layer.feedForward = .moe(b)
            }
            layers[l] = layer
        }
        if !description.tieWordEmbeddings { lmHead = try f("lm_head", lmHead) }
    }

    /// Every parameter with its logical name, in model order.
    public func forEachParameter(_ body: (_ name: String, _ value: Parameter) -> Void) {
        body("embed", embedding.tensor.map { .tensor($0) } ?? .stored(embedding))
        for (l, layer) in layers.enumerated() {
            let p = "layers.\(l)."
            body(p + "input_norm", .tensor(layer.inputNorm.weight))
            if let b = layer.inputNorm.bias { body(p + "input_norm.bias", .tensor(b)) }
            for (n, lin) in layer.attention.linears { lin.forEachParameter { body(p + "attn." + n + $0, $1) } }
            for (n, norm) in layer.attention.norms { body(p + "attn." + n, .tensor(norm.weight)) }
            if let s = layer.attention.sinks { body(p + "attn.sinks", .tensor(s)) }
            body(p + "post_norm", .tensor(layer.postAttentionNorm.weight))
            if let b = layer.postAttentionNorm.bias { body(p + "post_norm.bias", .tensor(b)) }
            switch layer.feedForward {
            case .dense(let m): for (k, lin) in m.projections { lin.forEachParameter { body(p + "mlp." + k + $0, $1) } }
            case .moe(let b):
                b.router.linear.forEachParameter { body(p + "moe.router" + $0, $1) }
                for (e, x) in b.experts.enumerated() {
                    for (k, lin) in x.projections { lin.forEachParameter { body(p + "moe.experts.\(e).\(k)" + $0, $1) } }
                }
                if let s = b.sharedExpert { for (k, lin) in s.projections { lin.forEachParameter { body(p + "moe.shared.\(k)" + $0, $1) } } }
                b.sharedExpertGate?.forEachParameter { body(p + "moe.shared_gate" + $0, $1) }
                if let ce = b.compressedExperts {
                    for e in 0..<b.numExperts {
                        body(p + "moe.experts.\(e).ce_gate", .tensor(ce.gate[e]))
                        body(p + "moe.experts.\(e).ce_up", .tensor(ce.up[e]))
                        body(p + "moe.experts.\(e).ce_mid", .tensor(ce.mid[e]))
                    }
                }
            }
        }
        body("norm", .tensor(norm.weight))
        if let b = norm.bias { body("norm.bias", .tensor(b)) }
        if !description.tieWordEmbeddings { lmHead.forEachParameter { body("lm_head" + $0, $1) } }
    }

    /// Makes every parameter an f32 tensor training can update (f16/bf16 weights are widened; f32 ones stay
    /// views of the mapped file, copied on write).
    public func makeTrainable() {
        replaceLinears { $1.trainable() }
        if embedding.tensor == nil { embedding = WeightMatrix(embedding.float()) }
        if description.tieWordEmbeddings { lmHead = DenseLinear(weight: embedding) }
    }
}
