// Package serialize turns checkpoint files into raw tensors and back, in pure
// Go: safetensors files (single or sharded), and the PyTorch `torch.save`
// format (.pt, .bin), both the zip archive that torch writes since 1.6 and,
// for reading, the older stream format.
//
// The package knows nothing of libtorch. A tensor here is a [RawTensor]: a
// dtype named with the safetensors spelling ("F32", "BF16", ...), a shape and
// its elements as little-endian bytes in C (row-major) order. The torch
// package wraps these functions to build real tensors.
//
// # Safetensors
//
// [ReadSafetensors] reads a whole file, [ReadSafetensorsHeader] only its
// header, and [OpenSafetensors] gives tensor-by-tensor access (with
// [SafetensorsFile.ReadInto] reading a tensor straight into memory the caller
// owns, so that a 600 MB checkpoint never sits in memory twice). The header is
// validated against the file before any data is read: header length, JSON
// shape, known dtypes, numel*size equal to each byte range, ranges that start
// at 0, follow each other without gap or overlap and end exactly at the end of
// the file. [WriteSafetensors] writes the layout of the reference
// implementation (tensors ordered by decreasing element size and then by
// name, the header padded with spaces to a multiple of 8 bytes), so every
// tensor's data is aligned to its element size. [ReadSafetensorsIndex] and
// [ReadSafetensorsSharded] handle `model.safetensors.index.json`.
//
// # PyTorch files
//
// [WritePT] writes a state dict (an OrderedDict of tensors) and
// [WritePTObject] any tree of dicts, lists, tuples, ints, floats, strings,
// bools, None and tensors. Both write the zip layout of torch.save
// (`archive/data.pkl`, `archive/data/N`, `archive/byteorder`,
// `archive/version`, each record 64-byte aligned) with a protocol-2 pickle
// that uses only what `torch.load(path, weights_only=True)` accepts. One
// limit comes from torch rather than from this package: the weights_only
// unpickler of torch 1.13 has no opcode for Python floats, so a checkpoint
// holding float values loads with weights_only=True only in torch 2.x (ints,
// strings, bools, None, containers and tensors load in both).
//
// [ReadPT] and [ReadPTObject] read files written by torch.save (zip or the
// legacy pre-1.6 stream format) or by this package. The pickle is interpreted,
// never executed: tensors are rebuilt from their storages (views with offsets
// and strides become contiguous copies), OrderedDict and nn.Parameter become
// plain values, and any other class instance becomes an [*Object] that holds
// its class name and arguments.
//
// # Error Handling
//
// Every function returns an error that names the file and, where one is at
// fault, the tensor key; nothing panics on malformed input.
package serialize
