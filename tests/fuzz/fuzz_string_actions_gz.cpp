// libFuzzer target: io::read_string_actions through gzip. The input is the text; the harness
// compresses it (as one or, when the first byte is odd, two gzip members split in the middle),
// so that mutations of the text reach the parser through the decompressing reader.
#include <cstdint>
#include <cstdlib>
#include <vector>
#include <zlib.h>
#include "celltx/io/graph_sources.hpp"
#include "fuzz_common.hpp"

namespace {
void gzip_append(const std::uint8_t* data, std::size_t size, std::vector<unsigned char>& out) {
    z_stream z{};
    if (deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
    std::vector<unsigned char> buf(deflateBound(&z, static_cast<uLong>(size)) + 64);
    z.next_in = const_cast<Bytef*>(data);
    z.avail_in = static_cast<uInt>(size);
    z.next_out = buf.data();
    z.avail_out = static_cast<uInt>(buf.size());
    if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::abort();
    out.insert(out.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(z.total_out));
    deflateEnd(&z);
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::vector<unsigned char> gz;
    if (size > 0 && (data[0] & 1)) {
        gzip_append(data, size / 2, gz);
        gzip_append(data + size / 2, size - size / 2, gz);
    } else {
        gzip_append(data, size, gz);
    }
    const auto path = celltx_fuzz::write_input(gz.data(), gz.size(), ".txt.gz");
    celltx_fuzz::run_parser([&] { (void)celltx::io::read_string_actions(path, celltx_fuzz::universe()); });
    return 0;
}
