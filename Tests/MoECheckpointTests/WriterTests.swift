import Foundation
import Testing
import MoETensor
@testable import MoECheckpoint

/// The streaming writer: shards within the size, an index HF's loader reads, bytes and dtype conversions
/// exact, natural tensor order, and nothing left behind on failure.
@Suite struct WriterTests {
    func entries() -> [SafeTensorsWriter.Entry] {
        (0..<12).map { i in
            let t = Tensor(shape: [4, 8], values: (0..<32).map { Float(i * 100 + $0) / 8 })
            return SafeTensorsWriter.Entry("model.layers.\(i).w.weight", t, dtype: i % 2 == 0 ? .bf16 : .f32)
        }
    }

    @Test func shardsWithIndexReadBackExactly() throws {
        let s = Scratch()
        let names = try CheckpointWriter.write(entries(), into: s.url, shardSize: 300)
        let shards = names.filter { $0.hasSuffix(".safetensors") }
        #expect(shards.count > 2 && shards[0] == "model-00001-of-\(String(format: "%05d", shards.count)).safetensors")
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: s.url.appendingPathComponent("model.safetensors.index.json"))) as! [String: Any]
        #expect((index["weight_map"] as! [String: String]).count == 12)
        #expect((index["metadata"] as! [String: Any])["total_size"] as? Int == entries().reduce(0) { $0 + $1.byteCount })
        for name in shards {
            let size = try FileManager.default.attributesOfItem(atPath: s.path(name))[.size] as! Int
            #expect(size <= 300 + 8 + 400, "\(name): \(size) bytes")   // data ≤ shard size, plus the header
        }
        let ck = try Checkpoint(directory: s.url)
        for (i, e) in entries().enumerated() {
            guard case .tensor(let t) = e.source else { continue }
            let back = try ck.tensor(e.name)
            #expect(ck.info(e.name)?.dtype == e.dtype)
            // bf16 rounds; these values are exact in bf16 up to 8 significant bits.
            let want = e.dtype == .f32 ? t.array : t.array.map { Convert.bf16ToFloat(Convert.floatToBF16($0)) }
            #expect(back.array == want, "tensor \(i)")
        }
        // Layers in numeric order: layer 2's tensor comes before layer 10's.
        let first = (index["weight_map"] as! [String: String])
        #expect(first["model.layers.2.w.weight"]! <= first["model.layers.10.w.weight"]!)
    }

    @Test func smallModelsStayOneFile() throws {
        let s = Scratch()
        #expect(try CheckpointWriter.write(entries(), into: s.url) == ["model.safetensors"])
        #expect(!FileManager.default.fileExists(atPath: s.path("model.safetensors.index.json")))
    }

    @Test func mappedRowsAndStoredMatricesAreWrittenUnchanged() throws {
        let s = Scratch()
        let t = Tensor(shape: [6, 4], values: (0..<24).map { Float($0) - 7.5 })
        try SafeTensorsWriter.write([.init("a", t, dtype: .bf16)], to: s.url.appendingPathComponent("src.safetensors"))
        let src = try Checkpoint(directory: s.url)
        let rows = try src.rowsEntry("a", rows: [4, 1])
        let strided = WeightMatrix(viewing: UnsafeRawPointer(t.data), dtype: .f32, rows: 3, cols: 2, rowStride: 4, owner: t)
        let out = s.url.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try CheckpointWriter.write([rows, .init("m", strided, dtype: .bf16), .init("g", dtype: .f32, shape: [3]) { off, buf in
            for i in 0..<(buf.count / 4) { buf.storeBytes(of: Float(off / 4 + i), toByteOffset: 4 * i, as: Float.self) }
        }], into: out)
        let back = try Checkpoint(directory: out)
        #expect(try back.tensor("a").array == [8.5, 9.5, 10.5, 11.5, -3.5, -2.5, -1.5, -0.5])
        #expect(try back.tensor("m").array == [-7.5, -6.5, -3.5, -2.5, 0.5, 1.5])
        #expect(try back.tensor("g").array == [0, 1, 2])
    }

    @Test func duplicateNamesAreRefusedAndNothingIsLeft() throws {
        let s = Scratch()
        let t = Tensor(shape: [1], values: [1])
        #expect(throws: CheckpointError.self) { try SafeTensorsWriter.write([.init("x", t), .init("x", t)], to: s.url.appendingPathComponent("d.safetensors")) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.url.path).isEmpty)
    }

    @Test func naturalOrder() {
        let names = ["model.layers.10.a", "model.layers.2.b", "lm_head.weight", "model.layers.2.a", "model.layers.02.a"]
        #expect(names.sorted(by: SafeTensorsWriter.naturalOrder) == ["lm_head.weight", "model.layers.2.a", "model.layers.2.b", "model.layers.02.a", "model.layers.10.a"])
    }

    /// A checkpoint larger than the free disk is refused before any byte is written, naming the folder.
    @Test func tooLittleDiskIsRefusedUpFront() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-disk-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let free = try #require(DiskSpace.available(at: dir))
        let huge = SafeTensorsWriter.Entry("w", dtype: .bf16, shape: [free / 2 + 1, 2]) { _, b in b.initializeMemory(as: UInt8.self, repeating: 0) }
        do {
            try CheckpointWriter.write([huge], into: dir)
            Issue.record("a checkpoint larger than the free disk was not refused")
        } catch {
            #expect("\(error)".contains("not enough disk") && "\(error)".contains(dir.lastPathComponent))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }

    /// An in-place output is written row block by row block and appears under its name only when committed.
    @Test func mappedOutputCommitsOrLeavesNothing() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-mapped-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("a.safetensors")
        do {
            let out = try MappedSafeTensorsOutput(url, tensors: [("x", .f32, [3, 2]), ("h", .f16, [3, 2])])
            out.write("x", row: 1, Tensor(shape: [2, 2], values: [1, 2, 3, 4]))
            _ = out   // dropped without commit
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
        let out = try MappedSafeTensorsOutput(url, tensors: [("x", .f32, [3, 2]), ("h", .f16, [3, 2])], metadata: ["layer": "1"])
        out.write("x", row: 1, Tensor(shape: [2, 2], values: [1, 2, 3, 4]))
        out.write("h", Tensor(shape: [3, 2], values: [0.5, 1, 1.5, 2, 2.5, 3]))
        try out.commit()
        let f = try SafeTensorsFile(path: url.path)
        #expect(try f.tensor("x").array == [0, 0, 1, 2, 3, 4])
        #expect(try f.tensor("h").array == [0.5, 1, 1.5, 2, 2.5, 3])
        #expect(f.info("h")?.dtype == .f16)
    }

    /// A resumable output: one writer at a time, its journal kept for the same key, started over for another.
    @Test func resumableOutputLocksAndKeysItsJournal() throws {
        let s = Scratch()
        let out = s.url.appendingPathComponent("o")
        do {
            let a = try AtomicDirectory(out, resumeKey: "job 1")
            #expect(!a.resuming && a.staging.lastPathComponent == ".o.partial")
            #expect(throws: CheckpointError.self) { try AtomicDirectory(out, resumeKey: "job 1") }   // locked
            try a.journal.save("x", [1.5, -0.0, Double.infinity, 1e-300])
            #expect(a.journal.load("x", as: [Double].self) == [1.5, -0.0, .infinity, 1e-300])
            #expect(a.journal.load("x", as: [Double].self)?[1].sign == .minus)
            let bits: Double = 0.1 + 0.2
            try a.journal.save("y", bits)
            #expect(a.journal.load("y", as: Double.self)?.bitPattern == bits.bitPattern)
        }
        do {
            let b = try AtomicDirectory(out, resumeKey: "job 1")
            #expect(b.resuming && b.journal.load("x", as: [Double].self) != nil)
        }
        let c = try AtomicDirectory(out, resumeKey: "job 2")
        #expect(!c.resuming && c.journal.load("x", as: [Double].self) == nil)
        try "done".write(to: c.url("a.txt"), atomically: false, encoding: .utf8)
        try c.commit()
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("a.txt").path))
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent(".journal").path))
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.url.path) == ["o"])
    }
}
