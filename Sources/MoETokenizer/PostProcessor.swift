import MoEJSON
/// tokenizer.json "post_processor": what `add_special_tokens` adds around a single sequence.
protocol PostProcessor: Sendable {
    func process(_ ids: [Int]) -> [Int]
}

struct NoOpPostProcessor: PostProcessor {
    func process(_ ids: [Int]) -> [Int] { ids }
}

struct TemplatePostProcessor: PostProcessor {
    enum Item { case sequence, special([Int]) }
    let items: [Item]
    func process(_ ids: [Int]) -> [Int] {
        items.flatMap { item -> [Int] in
            switch item {
            case .sequence: return ids
            case .special(let s): return s
            }
        }
    }
}

struct SequencePostProcessor: PostProcessor {
    let stages: [any PostProcessor]
    func process(_ ids: [Int]) -> [Int] { stages.reduce(ids) { $1.process($0) } }
}

func makePostProcessor(_ node: JSONNode, tokenID: (String) -> Int?) throws -> any PostProcessor {
    if node.isNull { return NoOpPostProcessor() }
    switch try node.type() {
    case "ByteLevel": return NoOpPostProcessor()   // only adjusts offsets
    case "Sequence":
        return SequencePostProcessor(stages: try node["processors"].array().map { try makePostProcessor($0, tokenID: tokenID) })
    case "TemplateProcessing":
        var specials: [String: [Int]] = [:]
        if let obj = node["special_tokens"].members {
            for (key, _) in obj {
                let ids = try node["special_tokens"][key]["ids"].array().map { try $0.int() }
                specials[key] = ids
            }
        }
        let items = try node["single"].array().map { el -> TemplatePostProcessor.Item in
            if !el["Sequence"].isNull {
                // tokenizers' Sequence is A or B, its type id a u32: anything else is refused there.
                _ = try el["Sequence"]["id"].oneOf(["A", "B"])
                _ = try el["Sequence"]["type_id"].unsigned()
                return .sequence
            }
            _ = try el["SpecialToken"]["type_id"].unsigned()
            let name = try el["SpecialToken"]["id"].string()
            guard let ids = specials[name] ?? tokenID(name).map({ [$0] }) else {
                throw el.fail("special token \(name.debugDescription) is neither in special_tokens nor in the vocabulary")
            }
            return .special(ids)
        }
        return TemplatePostProcessor(items: items)
    case "BertProcessing", "RobertaProcessing":
        let cls = try node["cls"].array(), sep = try node["sep"].array()
        guard cls.count == 2, sep.count == 2 else { throw node.fail("cls and sep should be [token, id]") }
        return TemplatePostProcessor(items: [.special([try cls[1].int()]), .sequence, .special([try sep[1].int()])])
    case let t:
        throw node.fail("unsupported post-processor \"\(t)\" (supported: TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence)")
    }
}
