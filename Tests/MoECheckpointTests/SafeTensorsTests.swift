import Foundation
import Testing
import MoETensor
@testable import MoECheckpoint

/// A scratch folder removed at the end of each test.
final class Scratch {
    let url: URL
    init() {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-test-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    /// Writes a safetensors file from a raw header string and a data section of `dataBytes` bytes.
    @discardableResult
    func file(_ name: String, header: String, dataBytes: Int, declaredLength: UInt64? = nil) -> String {
        var bytes = [UInt8]()
        let h = Array(header.utf8)
        var n = (declaredLength ?? UInt64(h.count)).littleEndian
        withUnsafeBytes(of: &n) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: h)
        bytes.append(contentsOf: (0..<dataBytes).map { UInt8($0 % 251) })
        _ = FileManager.default.createFile(atPath: path(name), contents: Data(bytes))
        return path(name)
    }
}

@Suite struct MalformedSafeTensorsTests {
    /// Each malformed file gives a CheckpointError naming the file (and tensor where there is one) with a
    /// recognisable problem; none crashes.
    static let cases: [(String, String, Int, UInt64?, String, String?)] = [
        ("header length past EOF", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 4, 10_000, "past the end", nil),
        ("bad JSON", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]"#, 4, nil, "not valid JSON", nil),
        ("not an object", #"[1, 2, 3]"#, 0, nil, "not a JSON object", nil),
        ("unknown dtype", #"{"a":{"dtype":"F23","shape":[1],"data_offsets":[0,4]}}"#, 4, nil, "unknown dtype \"F23\"", "a"),
        ("range outside file", #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, 8, nil, "outside", "a"),
        ("overlapping ranges", #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, 12, nil, "overlaps", "b"),
        ("shape/size mismatch", #"{"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}}"#, 8, nil, "data_offsets span 8", "a"),
        ("shape overflow", #"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#, 8, nil, "overflows", "a"),
        ("negative dimension", #"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, 8, nil, "invalid dimension", "a"),
        ("fractional offset", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0.5,4]}}"#, 8, nil, "data_offsets", "a"),
        ("reversed offsets", #"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#, 8, nil, "reversed", "a"),
        ("missing dtype", #"{"a":{"shape":[1],"data_offsets":[0,4]}}"#, 4, nil, "missing dtype", "a"),
        ("bad metadata", #"{"__metadata__":{"format":1}}"#, 0, nil, "__metadata__", nil),
        ("gap between tensors", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#, 12, nil, "belong to no tensor", "b"),
        ("bytes after the last tensor", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 8, nil, "not fully covered", nil),
        // The header's padding spaces let a length 2 bytes short still parse as JSON; the data then start 2 bytes early.
        ("header length 2 bytes short", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}  "#, 4, 54, "not fully covered", nil),
    ]

    @Test(arguments: cases.indices)
    func rejected(_ i: Int) {
        let (label, header, data, declared, problem, tensor) = Self.cases[i]
        let s = Scratch()
        let p = s.file("bad.safetensors", header: header, dataBytes: data, declaredLength: declared)
        do {
            _ = try SafeTensorsFile(path: p)
            Issue.record("\(label): accepted")
        } catch let e as CheckpointError {
            #expect(e.file == p, "\(label)")
            #expect(e.tensor == tensor, "\(label): \(e)")
            #expect(e.description.contains(problem), "\(label): \(e)")
            #expect(!e.description.contains("\n"))
        } catch {
            Issue.record("\(label): unexpected \(error)")
        }
    }

    @Test func truncatedFile() {
        let s = Scratch()
        _ = FileManager.default.createFile(atPath: s.path("t.safetensors"), contents: Data([1, 2, 3]))
        #expect(throws: CheckpointError.self) { try SafeTensorsFile(path: s.path("t.safetensors")) }
        // A real file cut short: its tensors now run past the end.
        let good = Tensor(shape: [4], values: [1, 2, 3, 4])
        let url = s.url.appendingPathComponent("ok.safetensors")
        try! SafeTensorsWriter.write([.init("w", good)], to: url)
        let full = try! Data(contentsOf: url)
        _ = FileManager.default.createFile(atPath: s.path("cut.safetensors"), contents: full.prefix(full.count - 3))
        do {
            _ = try SafeTensorsFile(path: s.path("cut.safetensors"))
            Issue.record("accepted a truncated file")
        } catch let e as CheckpointError {
            #expect(e.description.contains("outside"))
        } catch { Issue.record("\(error)") }
    }

    @Test func missingFileAndNonFloatRead() throws {
        #expect(throws: CheckpointError.self) { try SafeTensorsFile(path: "/nonexistent/x.safetensors") }
        let s = Scratch()
        let p = s.file("i.safetensors", header: #"{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#, dataBytes: 8)
        let f = try SafeTensorsFile(path: p)
        #expect(throws: CheckpointError.self) { try f.tensor("ids") }
        #expect(throws: CheckpointError.self) { try f.tensor("absent") }
    }
}

@Suite struct SafeTensorsRoundTripTests {
    @Test(arguments: [DType.f32, .bf16, .f16])
    func writeThenRead(_ dtype: DType) throws {
        let s = Scratch()
        let a = Tensor(shape: [2, 3], values: [1, -2.5, 3.25, 0, 1e-3, 65000])
        let b = Tensor(shape: [5], values: [0.1, 0.2, 0.3, 0.4, 0.5])
        let url = s.url.appendingPathComponent("m.safetensors")
        try SafeTensorsWriter.write([.init("b.weight", b, dtype: dtype), .init("a.weight", a, dtype: dtype)], metadata: ["format": "pt"], to: url)
        let f = try SafeTensorsFile(path: url.path)
        #expect(f.metadata == ["format": "pt"])
        #expect(f.tensors.map(\.name) == ["a.weight", "b.weight"])
        #expect(f.dataOffset % 8 == 0)
        let back = try f.tensor("a.weight")
        #expect(back.shape == [2, 3])
        let expected: [Float] = a.array.map {
            switch dtype {
            case .bf16: return Convert.bf16ToFloat(Convert.floatToBF16($0))
            case .f16: return Float(Float16($0))
            default: return $0
            }
        }
        #expect(back.array == expected)
        // No temporary file is left beside the output.
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.url.path) == ["m.safetensors"])
    }

    @Test func readsAFileWrittenByPythonSafetensors() throws {
        // The shared reference model was written by HF's save_pretrained.
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("shared/models/mixtral-ref/reference/logits.safetensors")
        let f = try SafeTensorsFile(path: url.path)
        #expect(f.info("logits")?.shape == [300, 4096])
        #expect(try f.tensor("logits").count == 300 * 4096)
    }
}

@Suite struct CheckpointFolderTests {
    func write(_ s: Scratch, _ name: String, _ tensors: [String: [Float]]) throws {
        try SafeTensorsWriter.write(tensors.map { .init($0.key, Tensor(shape: [$0.value.count], values: $0.value)) },
                                    to: s.url.appendingPathComponent(name))
    }

    @Test func shardsViaIndex() throws {
        let s = Scratch()
        try write(s, "model-00001-of-00002.safetensors", ["a": [1, 2]])
        try write(s, "model-00002-of-00002.safetensors", ["b": [3]])
        try #"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#
            .write(toFile: s.path("model.safetensors.index.json"), atomically: true, encoding: .utf8)
        let c = try Checkpoint(directory: s.url)
        #expect(c.names == ["a", "b"] && c.files.count == 2)
        #expect(try c.tensor("b").array == [3])
        #expect(throws: CheckpointError.self) { try c.tensor("a", shape: [3]) }
        #expect(throws: CheckpointError.self) { try c.tensor("zzz") }
    }

    @Test func duplicateTensorAcrossShardsAndEscapingIndex() throws {
        let s = Scratch()
        try write(s, "x1.safetensors", ["a": [1]])
        try write(s, "x2.safetensors", ["a": [2]])
        #expect(throws: CheckpointError.self) { try Checkpoint(directory: s.url) }
        try #"{"weight_map": {"a": "../x1.safetensors"}}"#.write(toFile: s.path("model.safetensors.index.json"), atomically: true, encoding: .utf8)
        #expect(throws: CheckpointError.self) { try Checkpoint(directory: s.url) }
    }

    @Test func emptyOrMissingFolder() {
        let s = Scratch()
        #expect(throws: CheckpointError.self) { try Checkpoint(directory: s.url) }
        #expect(throws: CheckpointError.self) { try Checkpoint(directory: s.url.appendingPathComponent("nope")) }
    }

    @Test func atomicDirectoryAppearsOnlyWhenComplete() throws {
        let s = Scratch()
        let out = s.url.appendingPathComponent("out")
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try AtomicDirectory.write(out) { d in
                try "half".write(to: d.url("a.txt"), atomically: false, encoding: .utf8)
                throw Boom()
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.url.path).isEmpty)
        try AtomicDirectory.write(out) { d in try "done".write(to: d.url("a.txt"), atomically: false, encoding: .utf8) }
        #expect(try String(contentsOf: out.appendingPathComponent("a.txt"), encoding: .utf8) == "done")
        #expect(throws: CheckpointError.self) { try AtomicDirectory(out) }
    }
}

@Suite struct HFConfigTests {
    func config(_ json: String) throws -> HFConfig {
        HFConfig(path: "config.json", raw: try JSONDecoder().decode([String: JSONValue].self, from: Data(json.utf8)))
    }

    @Test func ropeSpellings() throws {
        let v4 = try config(#"{"rope_theta": 500000, "rope_scaling": {"type": "yarn", "factor": 4, "original_max_position_embeddings": 4096}}"#)
        let v5 = try config(#"{"rope_parameters": {"rope_type": "yarn", "rope_theta": 500000, "factor": 4, "original_max_position_embeddings": 4096}}"#)
        #expect(try v4.ropeParameters() == v5.ropeParameters())
        #expect(try v4.ropeParameters().type == "yarn")
        let none = try config(#"{"rope_theta": 10000, "rope_scaling": null}"#)
        #expect(try none.ropeParameters().type == "default")
    }

    @Test func tokenIDsAndTypeErrors() throws {
        let c = try config(#"{"bos_token_id": null, "eos_token_id": [1, 2], "pad_token_id": 0, "hidden_size": "big"}"#)
        #expect(try c.tokenIDs("bos_token_id") == [] && c.tokenIDs("eos_token_id") == [1, 2] && c.tokenIDs("pad_token_id") == [0])
        #expect(throws: CheckpointError.self) { try c.tokenIDs("hidden_size") }
        do {
            _ = try c.int("hidden_size")
            Issue.record("accepted a string")
        } catch let e as CheckpointError {
            #expect(e.description == "config.json: key \"hidden_size\" should be an integer")
        }
        #expect(throws: CheckpointError.self) { try c.int(anyOf: ["num_experts", "num_local_experts"]) }
    }
}

/// Inputs are mapped read-only, which the kernel does not charge against the commit limit: a one-file checkpoint
/// larger than RAM + swap opens. The file is sparse (no disk used). The test is enabled where the kernel's
/// overcommit policy is heuristic or strict (vm.overcommit_memory 0 or 2), the policies under which a private
/// writable mapping of that size is refused, as the old mapping was; that refusal is checked too, so the test
/// shows the file really is beyond the limit.
@Suite struct LargerThanCommitTests {
    static var overcommitPolicy: Int? {
        (try? String(contentsOfFile: "/proc/sys/vm/overcommit_memory", encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }
    /// RAM + swap in bytes, from /proc/meminfo.
    static var commitCeiling: Int {
        let text = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        var kib = 0
        for line in text.split(separator: "\n") where line.hasPrefix("MemTotal:") || line.hasPrefix("SwapTotal:") {
            kib += Int(line.split(separator: " ")[1]) ?? 0
        }
        return kib * 1024
    }

    @Test(.enabled(if: [0, 2].contains(overcommitPolicy ?? 1), "vm.overcommit_memory is 1 (always): no size is refused, nothing to show"))
    func opensAFileLargerThanRAMPlusSwap() throws {
        let s = Scratch()
        let n = (2 * Self.commitCeiling / 4 + 4095) / 4096 * 4096      // f32 elements: twice RAM + swap
        let header = #"{"big":{"dtype":"F32","shape":[\#(n)],"data_offsets":[0,\#(4 * n)]}}"#
        let p = s.path("model.safetensors")
        var bytes = [UInt8]()
        var len = UInt64(header.utf8.count).littleEndian
        withUnsafeBytes(of: &len) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: header.utf8)
        _ = FileManager.default.createFile(atPath: p, contents: Data(bytes))
        let fd = open(p, O_WRONLY)
        #expect(fd >= 0)
        #expect(ftruncate(fd, off_t(bytes.count + 4 * n)) == 0)   // sparse: the data section is a hole
        close(fd)

        let f = try SafeTensorsFile(path: p)
        #expect(f.mapping.size == bytes.count + 4 * n)
        let t = try f.tensor("big")
        #expect(t.count == n && t[n - 1] == 0 && t[0] == 0)
        // The same file as a private writable mapping (what training in place asks for) is beyond the limit.
        #expect(throws: CheckpointError.self) { try f.mapping.makeWritable() }
    }
}
