// The text of one generation as it may be sent: generated pieces go in, and only text that is
// final comes out — never bytes that could still become a stop string (the peer's partial-stop
// hold-back), never the first bytes of an unfinished UTF-8 character.
//
// Contract: the concatenation of every take() and the final flush() is the generated text up
// to (not including) the first occurrence of any stop string, or all of it when none occurs.
// Not thread-safe (one per slot, used on the scheduler thread).
#pragma once

#include <string>
#include <vector>

namespace expertmesh::coordinator::server {

class TextStream {
 public:
  TextStream() = default;
  explicit TextStream(std::vector<std::string> stop);
  // Appends a piece. True when the text now contains a stop string: the text is cut before its
  // first occurrence and *stop_word is set to it (further push()es are not expected).
  bool push(const std::string& piece, std::string* stop_word);
  // The text that became final since the last take().
  std::string take();
  // Everything not yet taken (the request ended: nothing can complete a stop string now).
  std::string flush();
  const std::string& text() const { return buf_; }

 private:
  size_t held_back() const;  // bytes at the end of buf_ that must wait
  std::vector<std::string> stop_;
  std::string buf_;
  size_t sent_ = 0;
};

}  // namespace expertmesh::coordinator::server
