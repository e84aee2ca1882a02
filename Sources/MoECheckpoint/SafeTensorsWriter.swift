import Foundation
import MoETensor
#if canImport(Glibc)
import Glibc
#endif

/// Writes safetensors files tensor by tensor, never holding more than one bounded buffer: bytes already in
/// the target dtype are written straight from where they are (a mapped source checkpoint), f32 tensors and
/// stored matrices are converted a block at a time. Data are written to a temporary file beside the target
/// and renamed into place only when complete, so a crash never leaves a half-written file under the final name.
public enum SafeTensorsWriter {
    public struct Entry {
        public enum Source {
            /// An f32 tensor, narrowed to `dtype` when written.
            case tensor(Tensor)
            /// A weight matrix in its stored dtype (possibly strided), converted when `dtype` differs.
            case matrix(WeightMatrix)
            /// Bytes already in `dtype` (copied from another file, so unchanged tensors stay bit-identical).
            case raw(Data)
            /// Byte ranges already in `dtype`, written one after the other (a mapped tensor, or some of its rows);
            /// `owner` keeps them alive.
            case mapped([UnsafeRawBufferPointer], owner: AnyObject)
            /// Bytes produced on demand: `fill(offset, buffer)` writes the bytes at `offset` of the tensor's data
            /// into `buffer` (random weights, computed tensors too large to hold).
            case generated(@Sendable (Int, UnsafeMutableRawBufferPointer) -> Void)
        }
        public let name: String
        public let source: Source
        public let dtype: DType
        public let shape: [Int]

        public init(_ name: String, _ tensor: Tensor, dtype: DType = .f32) {
            self.name = name
            self.source = .tensor(tensor)
            self.dtype = dtype
            self.shape = tensor.shape
        }

        /// A stored matrix, in its own dtype unless `dtype` is given.
        public init(_ name: String, _ matrix: WeightMatrix, dtype: DType? = nil) {
            self.name = name
            self.source = .matrix(matrix)
            self.dtype = dtype ?? matrix.dtype
            self.shape = matrix.shape
        }

        public init(_ name: String, raw: Data, dtype: DType, shape: [Int]) {
            precondition(raw.count == shape.reduce(1, *) * dtype.byteSize, "raw bytes of \(name) do not match \(shape) × \(dtype)")
            self.name = name
            self.source = .raw(raw)
            self.dtype = dtype
            self.shape = shape
        }

        public init(_ name: String, mapped pieces: [UnsafeRawBufferPointer], owner: AnyObject, dtype: DType, shape: [Int]) {
            precondition(pieces.reduce(0) { $0 + $1.count } == shape.reduce(1, *) * dtype.byteSize,
                         "mapped bytes of \(name) do not match \(shape) × \(dtype)")
            self.name = name
            self.source = .mapped(pieces, owner: owner)
            self.dtype = dtype
            self.shape = shape
        }

        public init(_ name: String, dtype: DType, shape: [Int], generate: @escaping @Sendable (Int, UnsafeMutableRawBufferPointer) -> Void) {
            self.name = name
            self.source = .generated(generate)
            self.dtype = dtype
            self.shape = shape
        }

        public var byteCount: Int { shape.reduce(1, *) * dtype.byteSize }
    }

    /// Bytes converted or generated per block.
    static let blockBytes = 8 << 20

    /// Writes one file with `entries` in natural name order (the data follow the header in the same order).
    ///
    /// With a recording `journal`, the file is resumable: it is built as `.<name>.tmp`, and at each decoder-layer
    /// boundary the data so far are flushed, `onDurable` records the caller's state, then the length is
    /// journaled. Run again with the same entries after a kill, the writer keeps those bytes and goes on from
    /// the next layer's first tensor (earlier entries are never asked for their bytes).
    public static func write(_ entries: [Entry], metadata: [String: String] = ["format": "pt"], to url: URL,
                             progress: ((Int) -> Void)? = nil, journal: Journal = .none, onDurable: (() throws -> Void)? = nil) throws {
        let sorted = entries.sorted { naturalOrder($0.name, $1.name) }
        for e in sorted {
            switch e.source {
            case .tensor, .matrix:
                guard e.dtype == .f32 || e.dtype == .f16 || e.dtype == .bf16 else {
                    throw CheckpointError(file: url.path, tensor: e.name, "cannot write dtype \(e.dtype.rawValue)")
                }
            default: break
            }
        }
        let (json, _) = try header(sorted.map { ($0.name, $0.dtype, $0.shape) }, metadata: metadata, file: url.path)
        let resumable = journal.directory != nil
        let record = "written-\(url.lastPathComponent)"
        let tmp = url.deletingLastPathComponent().appendingPathComponent(resumable ? ".\(url.lastPathComponent).tmp" : ".\(url.lastPathComponent).tmp-\(getpid())")
        // Data bytes an interrupted run left durable in `tmp` under this same header.
        var durable = 0
        if resumable, let n: Int = journal.load(record), n > 0, hasHeader(json, at: tmp, minimumSize: 8 + json.count + n) { durable = n }
        let fd = open(tmp.path, durable > 0 ? O_WRONLY : (O_WRONLY | O_CREAT | O_TRUNC), 0o644)
        guard fd >= 0 else { throw CheckpointError(file: tmp.path, "cannot create (\(String(cString: strerror(errno))))") }
        var closed = false
        do {
            let out = FileOutput(fd: fd, path: url.path, total: 8 + json.count + sorted.reduce(0) { $0 + $1.byteCount })
            if durable > 0 {
                guard ftruncate(fd, off_t(8 + json.count + durable)) == 0, lseek(fd, 0, SEEK_END) >= 0 else {
                    throw CheckpointError(file: tmp.path, "cannot resume (\(String(cString: strerror(errno))))")
                }
            } else {
                var len = UInt64(json.count).littleEndian
                try withUnsafeBytes(of: &len) { try out.write($0) }
                try json.withUnsafeBytes { try out.write($0) }
            }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: blockBytes, alignment: 64)
            defer { buffer.deallocate() }
            var offset = 0
            var previousLayer: Int? = nil
            for e in sorted {
                let layer = layerNumber(e.name)
                if offset + e.byteCount <= durable {
                    offset += e.byteCount
                    previousLayer = layer
                    progress?(e.byteCount)
                    continue
                }
                if resumable && offset > durable && layer != previousLayer {
                    guard fdatasync(fd) == 0 else { throw CheckpointError(file: url.path, "cannot flush (\(String(cString: strerror(errno))))") }
                    try onDurable?()
                    try journal.save(record, offset)
                    durable = offset
                }
                try writeData(e, to: out, buffer: buffer)
                offset += e.byteCount
                previousLayer = layer
                progress?(e.byteCount)
            }
            guard fsync(fd) == 0 else { throw CheckpointError(file: url.path, "cannot flush (\(String(cString: strerror(errno))))") }
            close(fd)
            closed = true
            if rename(tmp.path, url.path) != 0 {
                throw CheckpointError(file: url.path, "cannot move the finished file into place")
            }
        } catch {
            if !closed { close(fd) }
            // A resumable file keeps its durable part for the next run.
            if !resumable { try? FileManager.default.removeItem(at: tmp) }
            throw error
        }
    }

    /// Whether the file at `url` exists, is at least `minimumSize` bytes and starts with the header `json`.
    static func hasHeader(_ json: Data, at url: URL, minimumSize: Int) -> Bool {
        guard let h = FileHandle(forReadingAtPath: url.path) else { return false }
        defer { try? h.close() }
        guard let size = try? h.seekToEnd(), Int(size) >= minimumSize else { return false }
        try? h.seek(toOffset: 0)
        guard let head = try? h.read(upToCount: 8 + json.count), head.count == 8 + json.count else { return false }
        return head.prefix(8) == withUnsafeBytes(of: UInt64(json.count).littleEndian) { Data($0) } && head.dropFirst(8) == json
    }

    /// Whether `url` is a finished file of exactly these entries (a shard an interrupted run completed).
    static func isFinished(_ url: URL, _ entries: [Entry], metadata: [String: String]) -> Bool {
        let sorted = entries.sorted { naturalOrder($0.name, $1.name) }
        guard let (json, _) = try? header(sorted.map { ($0.name, $0.dtype, $0.shape) }, metadata: metadata, file: url.path) else { return false }
        let size = 8 + json.count + sorted.reduce(0) { $0 + $1.byteCount }
        guard let attrs = try? FileManager.default.attributesOfItem(atPath: url.path), (attrs[.size] as? Int) == size else { return false }
        return hasHeader(json, at: url, minimumSize: size)
    }

    /// The decoder layer a tensor name belongs to (`….layers.N.…`), if any.
    static func layerNumber(_ name: String) -> Int? {
        guard let r = name.range(of: "layers.") else { return nil }
        let digits = name[r.upperBound...].prefix { $0.isNumber }
        return Int(digits)
    }

    /// The header of a file holding `tensors` in this order (padded with spaces to 8 bytes, as the reference
    /// writer does), and each tensor's data offset.
    static func header(_ tensors: [(name: String, dtype: DType, shape: [Int])], metadata: [String: String], file: String) throws -> (Data, [Int]) {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        var offsets: [Int] = []
        var seen = Set<String>()
        for e in tensors {
            guard seen.insert(e.name).inserted else { throw CheckpointError(file: file, tensor: e.name, "written twice") }
            let n = e.shape.reduce(1, *) * e.dtype.byteSize
            header[e.name] = ["dtype": e.dtype.rawValue, "shape": e.shape, "data_offsets": [offset, offset + n]] as [String: Any]
            offsets.append(offset)
            offset += n
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (json.count + 8) % 8 != 0 { json.append(0x20) }
        return (json, offsets)
    }

    static func writeData(_ e: Entry, to out: FileOutput, buffer: UnsafeMutableRawBufferPointer) throws {
        switch e.source {
        case .raw(let d):
            try d.withUnsafeBytes { try out.write($0) }
        case .mapped(let pieces, let owner):
            try withExtendedLifetime(owner) { for p in pieces { try out.write(p) } }
        case .tensor(let t):
            let per = blockBytes / e.dtype.byteSize
            var i = 0
            while i < t.count {
                let n = min(per, t.count - i)
                Convert.fromFloat(t.data + i, count: n, dtype: e.dtype, into: buffer.baseAddress!)
                try out.write(UnsafeRawBufferPointer(start: buffer.baseAddress, count: n * e.dtype.byteSize))
                i += n
            }
        case .matrix(let w):
            if w.dtype == e.dtype && w.isContiguous {
                try withExtendedLifetime(w.owner) { try out.write(UnsafeRawBufferPointer(start: w.base, count: w.byteCount)) }
            } else if w.dtype == e.dtype && w.hasContiguousRows {
                for r in 0..<w.rows { try out.write(UnsafeRawBufferPointer(start: w.row(r), count: w.cols * w.dtype.byteSize)) }
            } else {
                let row = Tensor(zeros: [w.cols])
                let rowsPer = max(1, blockBytes / max(1, w.cols * e.dtype.byteSize))
                var r = 0
                while r < w.rows {
                    let n = min(rowsPer, w.rows - r)
                    for i in 0..<n {
                        w.widenRow(r + i, into: row.data)
                        Convert.fromFloat(row.data, count: w.cols, dtype: e.dtype, into: buffer.baseAddress! + i * w.cols * e.dtype.byteSize)
                    }
                    try out.write(UnsafeRawBufferPointer(start: buffer.baseAddress, count: n * w.cols * e.dtype.byteSize))
                    r += n
                }
            }
        case .generated(let fill):
            var off = 0
            let total = e.byteCount
            let unit = max(e.dtype.byteSize, blockBytes / e.dtype.byteSize * e.dtype.byteSize)
            while off < total {
                let n = min(unit, total - off)
                let piece = UnsafeMutableRawBufferPointer(start: buffer.baseAddress, count: n)
                fill(off, piece)
                try out.write(UnsafeRawBufferPointer(piece))
                off += n
            }
        }
    }

    /// Tensor names ordered with their numbers compared as numbers (layer 2 before layer 10), so each
    /// decoder layer's tensors are contiguous and in order in the files.
    public static func naturalOrder(_ a: String, _ b: String) -> Bool {
        var i = a.unicodeScalars.makeIterator(), j = b.unicodeScalars.makeIterator()
        var ca = i.next(), cb = j.next()
        func isDigit(_ c: Unicode.Scalar?) -> Bool { c.map { $0.value >= 48 && $0.value <= 57 } ?? false }
        while let x = ca, let y = cb {
            if isDigit(x) && isDigit(y) {
                var na = "", nb = ""
                while isDigit(ca) { na.unicodeScalars.append(ca!); ca = i.next() }
                while isDigit(cb) { nb.unicodeScalars.append(cb!); cb = j.next() }
                let va = na.drop { $0 == "0" }, vb = nb.drop { $0 == "0" }
                if va.count != vb.count { return va.count < vb.count }
                if va != vb { return va < vb }
                if na.count != nb.count { return na.count < nb.count }
                continue
            }
            if x != y { return x.value < y.value }
            ca = i.next(); cb = j.next()
        }
        return ca == nil && cb != nil
    }
}

/// Unbuffered writes to a file descriptor, retried until complete, with errors that name the file.
final class FileOutput {
    let fd: Int32
    let path: String
    /// The file's full size, for the message when the disk fills.
    let total: Int
    init(fd: Int32, path: String, total: Int = 0) { self.fd = fd; self.path = path; self.total = total }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        var p = bytes.baseAddress, left = bytes.count
        while left > 0, let q = p {
            let n = Glibc.write(fd, q, min(left, 1 << 30))
            if n < 0 {
                if errno == EINTR { continue }
                if errno == ENOSPC || errno == EDQUOT {
                    let at = Int(lseek(fd, 0, SEEK_CUR))
                    let free = DiskSpace.available(at: URL(fileURLWithPath: path).deletingLastPathComponent()) ?? 0
                    throw CheckpointError(file: path, "the disk is full: \(formatBytes(max(total - at, left))) of this file still to write, " +
                                          "\(formatBytes(free)) free (free space and run the command again: it resumes where it can)", diskFull: true)
                }
                throw CheckpointError(file: path, "cannot write (\(String(cString: strerror(errno))))")
            }
            left -= n
            p = q + n
        }
    }
}

/// Reserves a file's blocks before it is written through a shared mapping: a write to a mapped page the disk has no
/// room for is a SIGBUS, so a full disk must show here, as an error naming the file and the bytes it needs.
public func reserveBlocks(_ fd: Int32, bytes: Int, path: String) throws {
    let r = posix_fallocate(fd, 0, off_t(bytes))
    guard r == 0 || r == EOPNOTSUPP || r == EINVAL else {
        let free = DiskSpace.available(at: URL(fileURLWithPath: path).deletingLastPathComponent()) ?? 0
        throw CheckpointError(file: path, r == ENOSPC || r == EDQUOT
            ? "the disk is full: this file needs \(formatBytes(bytes)), \(formatBytes(free)) free"
            : "cannot reserve \(formatBytes(bytes)) (\(String(cString: strerror(r))))", diskFull: r == ENOSPC || r == EDQUOT)
    }
}

/// Writes a model's tensors as a Hugging Face checkpoint folder's weights: one `model.safetensors` when they
/// fit in `shardSize` bytes, otherwise `model-00001-of-0000N.safetensors` shards of at most `shardSize`
/// (a tensor larger than that gets a shard of its own) and `model.safetensors.index.json` mapping each
/// tensor to its shard. Tensors are placed in natural name order, so a layer's tensors share a shard.
public enum CheckpointWriter {
    /// Hugging Face's default shard size (5 GB).
    public static let defaultShardSize = 5_000_000_000

    /// A byte count as written on a command line or in a recipe: plain bytes, or with a unit — KB/MB/GB/TB
    /// (powers of 1000, as Hugging Face spells shard sizes) or KiB/MiB/GiB/TiB (powers of 1024); nil when it is
    /// not one, or not positive.
    public static func parseSize(_ text: String) -> Int? {
        let s = text.trimmingCharacters(in: .whitespaces)
        let number = s.prefix { $0.isNumber || $0 == "." }
        let unit = s.dropFirst(number.count).trimmingCharacters(in: .whitespaces).lowercased()
        let scales: [String: Double] = ["": 1, "b": 1, "k": 1024, "kib": 1024, "kb": 1e3, "m": 1048576, "mib": 1048576, "mb": 1e6,
                                        "g": 1073741824, "gib": 1073741824, "gb": 1e9, "t": 1099511627776, "tib": 1099511627776, "tb": 1e12]
        guard let v = Double(number), let scale = scales[unit], v.isFinite, v > 0, v * scale < 9e18, v * scale >= 1 else { return nil }
        return Int(v * scale)
    }

    /// Returns the file names written; `onBytes` hears of each tensor's bytes as they are written.
    @discardableResult
    /// With a recording `journal` (a resumable output folder's), shards an interrupted run finished are kept
    /// and the one it was writing resumes after its last durable layer (see `SafeTensorsWriter.write`).
    public static func write(_ entries: [SafeTensorsWriter.Entry], into dir: URL, shardSize: Int = defaultShardSize,
                             onBytes: ((Int) -> Void)? = nil, journal: Journal = .none, onDurable: (() throws -> Void)? = nil) throws -> [String] {
        precondition(shardSize > 0)
        let sorted = entries.sorted { SafeTensorsWriter.naturalOrder($0.name, $1.name) }
        let total = sorted.reduce(0) { $0 + $1.byteCount }
        let present = ((try? FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: [.fileSizeKey])) ?? [])
            .reduce(0) { $0 + ((try? $1.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0) }
        try DiskSpace.require(max(0, total - present), in: dir, for: "the checkpoint's weights")
        var shards: [[SafeTensorsWriter.Entry]] = [[]]
        var size = 0
        for e in sorted {
            if size > 0 && size + e.byteCount > shardSize {
                shards.append([])
                size = 0
            }
            shards[shards.count - 1].append(e)
            size += e.byteCount
        }
        let report: (Int) -> Void = { onBytes?($0) }
        func writeShard(_ shard: [SafeTensorsWriter.Entry], _ name: String) throws {
            let url = dir.appendingPathComponent(name)
            if journal.directory != nil && SafeTensorsWriter.isFinished(url, shard, metadata: ["format": "pt"]) {
                for e in shard { report(e.byteCount) }
                return
            }
            try SafeTensorsWriter.write(shard, to: url, progress: report, journal: journal, onDurable: onDurable)
        }
        if shards.count == 1 {
            try writeShard(sorted, "model.safetensors")
            return ["model.safetensors"]
        }
        var names: [String] = []
        var weightMap: [String: String] = [:]
        for (i, shard) in shards.enumerated() {
            let name = String(format: "model-%05d-of-%05d.safetensors", i + 1, shards.count)
            try writeShard(shard, name)
            for e in shard { weightMap[e.name] = name }
            names.append(name)
        }
        let index: [String: Any] = ["metadata": ["total_size": total], "weight_map": weightMap]
        let json = try JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys])
        try json.write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        return names + ["model.safetensors.index.json"]
    }
}

/// Free space where outputs go, checked before writing starts so a long run does not fail at its end.
public enum DiskSpace {
    /// Bytes available to this user on the file system holding `url` (or its nearest existing parent).
    public static func available(at url: URL) -> Int? {
        var dir = url.standardizedFileURL
        while !FileManager.default.fileExists(atPath: dir.path) && dir.path != "/" { dir = dir.deletingLastPathComponent() }
        var st = statvfs()
        return statvfs(dir.path, &st) == 0 ? Int(st.f_bavail) * Int(st.f_frsize) : nil
    }

    /// Refuses (naming the folder, what is needed and what is free) when `bytes` more would not fit.
    public static func require(_ bytes: Int, in url: URL, for what: String) throws {
        guard let free = available(at: url), bytes > free else { return }
        throw CheckpointError(file: url.path, "not enough disk: \(what) need \(formatBytes(bytes)), \(formatBytes(free)) free")
    }
}
