#include "coordinator/server/text_stream.h"

#include <algorithm>

namespace expertmesh::coordinator::server {

namespace {

// Bytes at the end of `s` that begin a UTF-8 character whose continuation bytes are missing.
size_t incomplete_utf8_tail(const std::string& s, size_t from) {
  const size_t n = s.size();
  for (size_t back = 1; back <= 4 && back <= n - from; ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;  // only continuation bytes (invalid): send as they are
}

}  // namespace

TextStream::TextStream(std::vector<std::string> stop) : stop_(std::move(stop)) {
  stop_.erase(std::remove(stop_.begin(), stop_.end(), std::string()), stop_.end());
}

bool TextStream::push(const std::string& piece, std::string* stop_word) {
  buf_ += piece;
  // A match cannot start before sent_: text is only sent once no suffix of it starts a stop.
  size_t best = std::string::npos;
  for (const std::string& st : stop_) {
    const size_t at = buf_.find(st, sent_);
    if (at < best) {
      best = at;
      *stop_word = st;
    }
  }
  if (best == std::string::npos) return false;
  buf_.resize(best);
  return true;
}

size_t TextStream::held_back() const {
  const size_t avail = buf_.size() - sent_;
  size_t hold = 0;
  for (const std::string& st : stop_)
    for (size_t k = std::min(avail, st.size() - 1); k > hold; --k)
      if (buf_.compare(buf_.size() - k, k, st, 0, k) == 0) {
        hold = k;
        break;
      }
  return std::max(hold, incomplete_utf8_tail(buf_, sent_));
}

std::string TextStream::take() {
  const size_t end = buf_.size() - held_back();
  if (end <= sent_) return {};
  std::string out = buf_.substr(sent_, end - sent_);
  sent_ = end;
  return out;
}

std::string TextStream::flush() {
  std::string out = buf_.substr(std::min(sent_, buf_.size()));
  sent_ = buf_.size();
  return out;
}

}  // namespace expertmesh::coordinator::server
