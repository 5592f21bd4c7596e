// Tokenizer loading (tokenizer.ggml.* KVs), special-token partitioning, SPM, pieces and decode.
// Behaviour follows the peer's llama-vocab.cpp; see tokenizer.h for the contract.
#include "model/tokenizer/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <queue>

#include <fmt/format.h>

#include "model/gguf/gguf.h"
#include "model/tokenizer/tokenizer_impl.h"
#include "model/tokenizer/unicode.h"

namespace expertmesh {

namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581 '▁'

void replace_all(std::string* s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s->size());
  size_t pos = 0;
  while (true) {
    size_t hit = s->find(from, pos);
    if (hit == std::string::npos) break;
    out.append(*s, pos, hit - pos);
    out.append(to);
    pos = hit + from.size();
  }
  out.append(*s, pos, std::string::npos);
  *s = std::move(out);
}

// Reads an optional array KV whose elements have type `elem`; nullptr when absent.
Result<const gguf::Value*> get_array(const gguf::File& f, std::string_view key, gguf::ValueType elem) {
  const gguf::Value* v = f.find(key);
  if (!v) return static_cast<const gguf::Value*>(nullptr);
  if (v->type != gguf::ValueType::ARRAY || v->elem_type != elem)
    return Status::InvalidArgument(fmt::format("{}: key '{}' must be an array of {}", f.path(), key,
                                               gguf::value_type_name(elem)));
  return v;
}

uint32_t attr_from_type(int64_t t) {
  switch (t) {
    case 1: return kAttrNormal;
    case 2: return kAttrUnknown;
    case 3: return kAttrControl;
    case 4: return kAttrUserDefined;
    case 5: return kAttrUnused;
    case 6: return kAttrByte;
    default: return kAttrUndefined;
  }
}

// One piece of the input after special-token partitioning: raw text [off, off+len) or a token.
struct Fragment {
  int32_t token = -1;  // -1: raw text
  size_t off = 0, len = 0;
};

}  // namespace

TokenizerImpl::~TokenizerImpl() = default;

int32_t TokenizerImpl::spm_byte_token(uint8_t b) const {
  int32_t id = find(fmt::format("<0x{:02X}>", b));
  if (id >= 0) return id;
  id = find(std::string(1, static_cast<char>(b)));
  return id >= 0 ? id : unk;
}

// SentencePiece BPE: start from UTF-8 characters, repeatedly merge the adjacent pair whose
// concatenation is the highest-scoring token (ties: leftmost), then emit each symbol as its
// token or, failing that, as byte tokens.
void TokenizerImpl::encode_spm(const std::string& text, std::vector<int32_t>* out) const {
  struct Sym {
    int prev, next;
    size_t off, n;
  };
  struct Bigram {
    int left, right;
    float score;
    size_t size;
  };
  auto cmp = [](const Bigram& l, const Bigram& r) {
    return l.score < r.score || (l.score == r.score && l.left > r.left);
  };
  std::vector<Sym> syms;
  syms.reserve(text.size());
  for (size_t off = 0; off < text.size();) {
    size_t n = std::min(tok::utf8_len(static_cast<uint8_t>(text[off])), text.size() - off);
    const int idx = static_cast<int>(syms.size());
    syms.push_back({idx - 1, off + n == text.size() ? -1 : idx + 1, off, n});
    off += n;
  }
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(cmp)> queue(cmp);
  auto try_add = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    const std::string_view s(text.data() + syms[l].off, syms[l].n + syms[r].n);
    auto it = token_to_id.find(std::string(s));
    if (it == token_to_id.end()) return;
    queue.push({l, r, tokens[it->second].score, s.size()});
  };
  for (int i = 1; i < static_cast<int>(syms.size()); ++i) try_add(i - 1, i);
  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Sym& l = syms[b.left];
    Sym& r = syms[b.right];
    if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;
    l.n += r.n;
    r.n = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }
  if (syms.empty()) return;
  for (int i = 0; i != -1; i = syms[i].next) {
    const Sym& s = syms[i];
    int32_t id = find(std::string_view(text.data() + s.off, s.n));
    if (id >= 0) {
      out->push_back(id);
    } else {
      for (size_t j = 0; j < s.n; ++j) out->push_back(spm_byte_token(static_cast<uint8_t>(text[s.off + j])));
    }
  }
}

std::string TokenizerImpl::piece(int32_t id, bool special) const {
  if (id < 0 || id >= static_cast<int32_t>(tokens.size())) return "";
  const TokenData& t = tokens[id];
  if (!special && (t.attr & (kAttrUnknown | kAttrControl))) return "";
  if (t.attr & (kAttrUnknown | kAttrControl | kAttrUserDefined)) return t.text;
  if (t.attr & kAttrNormal) {
    if (type == VocabType::kBpe) {
      // Byte-level text back to bytes; a code point that stands for no byte is kept visible.
      std::string res;
      for (uint32_t c : tok::utf8_to_cpts(t.text)) {
        int b = tok::unicode_to_byte(c);
        if (b >= 0) {
          res.push_back(static_cast<char>(b));
        } else {
          res += "[UNK_BYTE_0x";
          for (unsigned char u : tok::cpt_to_utf8(c)) res += fmt::format("{:02x}", u);
          res += t.text + "]";
        }
      }
      return res;
    }
    std::string res = t.text;
    replace_all(&res, kSpaceMark, " ");
    return res;
  }
  if ((t.attr & kAttrByte) && t.text.size() >= 5) {
    return std::string(1, static_cast<char>(std::strtol(t.text.substr(3, 2).c_str(), nullptr, 16)));
  }
  return "";
}

Tokenizer::Tokenizer(std::unique_ptr<TokenizerImpl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_gguf(const gguf::File& f) {
  auto impl = std::make_unique<TokenizerImpl>();
  TokenizerImpl& v = *impl;
  EM_ASSIGN_OR_RETURN(v.model, f.get_string("tokenizer.ggml.model"));
  if (f.find("tokenizer.ggml.pre")) {
    EM_ASSIGN_OR_RETURN(v.pre, f.get_string("tokenizer.ggml.pre"));
  }
  if (v.model == "no_vocab" || v.model == "none") {
    v.type = VocabType::kNone;
    v.bos = v.eos = v.unk = -1;
    return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
  } else if (v.model == "llama") {
    v.type = VocabType::kSpm;
    v.bos = 1, v.eos = 2, v.unk = 0;
    v.add_space_prefix = true, v.add_bos = true;
  } else if (v.model == "bert") {
    v.type = VocabType::kWpm;
    v.bos = 101, v.eos = -1, v.unk = 100, v.sep = 102, v.pad = 0, v.mask = 103;
    v.add_bos = true, v.add_sep = true, v.clean_spaces = true;
  } else if (v.model == "gpt2") {
    v.type = VocabType::kBpe;
    v.bos = 11, v.eos = 11, v.unk = -1;
    v.clean_spaces = true;
    EM_ASSIGN_OR_RETURN(const gguf::Value* merges, get_array(f, "tokenizer.ggml.merges", gguf::ValueType::STRING));
    if (!merges) return Status::NotFound(fmt::format("{}: key 'tokenizer.ggml.merges' not found (gpt2 vocabulary)", f.path()));
    v.bpe_ranks.reserve(merges->array.size());
    for (size_t i = 0; i < merges->array.size(); ++i) {
      const std::string& w = merges->array[i].str;
      const size_t pos = w.find(' ', 1);
      std::string key = pos == std::string::npos ? std::string(" ") : w.substr(0, pos) + " " + w.substr(pos + 1);
      v.bpe_ranks.emplace(std::move(key), static_cast<int32_t>(i));
    }
    std::string pre = v.pre.empty() ? "default" : v.pre;
    EM_ASSIGN_OR_RETURN(v.pre_tokenizer, make_pre_tokenizer(pre, &v.ignore_merges, &v.clean_spaces, &v.add_bos));
    if (pre == "chatglm-bpe" || pre == "glm4") v.bos = -1;
  } else {
    return Status::Unsupported(fmt::format("{}: key 'tokenizer.ggml.model': unsupported tokenizer '{}' (llama, gpt2, bert)",
                                           f.path(), v.model));
  }
  if (const gguf::Value* p = f.find("tokenizer.ggml.add_space_prefix")) v.add_space_prefix = p->as_bool();

  EM_ASSIGN_OR_RETURN(const gguf::Value* toks, get_array(f, "tokenizer.ggml.tokens", gguf::ValueType::STRING));
  if (!toks) return Status::NotFound(fmt::format("{}: key 'tokenizer.ggml.tokens' not found", f.path()));
  EM_ASSIGN_OR_RETURN(const gguf::Value* scores, get_array(f, "tokenizer.ggml.scores", gguf::ValueType::FLOAT32));
  EM_ASSIGN_OR_RETURN(const gguf::Value* types, get_array(f, "tokenizer.ggml.token_type", gguf::ValueType::INT32));
  const size_t n = toks->array.size();
  if (n == 0 || n > (size_t{1} << 31) - 1)
    return Status::Corruption(fmt::format("{}: key 'tokenizer.ggml.tokens' has {} entries", f.path(), n));
  if (scores && scores->array.size() < n)
    return Status::Corruption(fmt::format("{}: key 'tokenizer.ggml.scores' has {} entries, fewer than the {} tokens",
                                          f.path(), scores->array.size(), n));
  if (types && types->array.size() < n)
    return Status::Corruption(fmt::format("{}: key 'tokenizer.ggml.token_type' has {} entries, fewer than the {} tokens",
                                          f.path(), types->array.size(), n));
  v.tokens.resize(n);
  v.token_to_id.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    TokenData& t = v.tokens[i];
    t.text = toks->array[i].str;
    if (t.text.empty()) t.text = fmt::format("[EMPTY_{}]", i);
    v.token_to_id[t.text] = static_cast<int32_t>(i);
    v.max_token_len = std::max(v.max_token_len, t.text.size());
    t.score = scores ? scores->array[i].as_f32() : 0.0f;
    t.attr = types ? attr_from_type(types->array[i].as_int()) : kAttrNormal;
  }

  // Special ids: present and in range overrides the default (out of range is ignored, as the peer does).
  const std::pair<const char*, int32_t*> ids[] = {
      {"tokenizer.ggml.bos_token_id", &v.bos},       {"tokenizer.ggml.eos_token_id", &v.eos},
      {"tokenizer.ggml.eot_token_id", &v.eot},       {"tokenizer.ggml.eom_token_id", &v.eom},
      {"tokenizer.ggml.unknown_token_id", &v.unk},   {"tokenizer.ggml.seperator_token_id", &v.sep},
      {"tokenizer.ggml.padding_token_id", &v.pad},   {"tokenizer.ggml.mask_token_id", &v.mask},
  };
  for (const auto& [key, dst] : ids) {
    const gguf::Value* val = f.find(key);
    if (!val) continue;
    if (!val->is_integer()) return Status::InvalidArgument(fmt::format("{}: key '{}' must be an integer", f.path(), key));
    const int64_t id = val->as_int();
    if (id >= 0 && id < static_cast<int64_t>(n)) *dst = static_cast<int32_t>(id);
  }
  if (const gguf::Value* p = f.find("tokenizer.ggml.add_bos_token")) v.add_bos = p->as_bool();
  if (const gguf::Value* p = f.find("tokenizer.ggml.add_eos_token")) v.add_eos = p->as_bool();
  if (const gguf::Value* p = f.find("tokenizer.ggml.add_sep_token")) v.add_sep = p->as_bool();

  // End-of-generation tokens recognised by text, as the peer does; they become CONTROL.
  static const char* const kEotTexts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                          "<|end_of_text|>", "<EOT>", "_<EOT>", "<｜end▁of▁sentence｜>",
                                          "<end_of_utterance>"};
  static const char* const kEogTexts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                          "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>"};
  if (v.eot < 0) {
    for (const char* t : kEotTexts) {
      int32_t id = v.find(t);
      if (id >= 0) {
        v.eot = id;
        v.tokens[id].attr |= kAttrControl;
        break;
      }
    }
  }
  if (v.eom < 0) {
    int32_t id = v.find("<|eom_id|>");
    if (id >= 0) v.eom = id, v.tokens[id].attr |= kAttrControl;
  }
  for (TokenData& t : v.tokens)
    if ((t.attr & kAttrControl) && t.text.find("unused") != std::string::npos) t.attr |= kAttrUnused;
  for (const char* t : kEogTexts) {
    int32_t id = v.find(t);
    if (id >= 0) v.eog_ids.push_back(id), v.tokens[id].attr |= kAttrControl;
  }
  for (int32_t id : {v.eos, v.eot, v.eom})
    if (id >= 0) v.eog_ids.push_back(id);
  std::sort(v.eog_ids.begin(), v.eog_ids.end());
  v.eog_ids.erase(std::unique(v.eog_ids.begin(), v.eog_ids.end()), v.eog_ids.end());
  for (const char* t : {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"}) {
    int32_t id = v.find(t);
    if (id >= 0) v.tokens[id].attr = kAttrUserDefined;
  }

  for (int32_t id = 0; id < static_cast<int32_t>(n); ++id)
    if (v.tokens[id].attr & (kAttrControl | kAttrUserDefined | kAttrUnknown)) v.special_tokens.push_back(id);
  std::stable_sort(v.special_tokens.begin(), v.special_tokens.end(), [&](int32_t a, int32_t b) {
    return v.tokens[a].text.size() > v.tokens[b].text.size();
  });

  // Per-model attributes the peer sets by name: Phi-3 strips whitespace right of special tokens.
  std::string name;
  if (const gguf::Value* p = f.find("general.name"); p && p->type == gguf::ValueType::STRING) name = p->str;
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  if (name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos) {
    for (int32_t id : v.special_tokens) v.tokens[id].attr |= kAttrRstrip;
    if (int32_t id = v.find("</s>"); id >= 0) v.tokens[id].attr |= kAttrRstrip;
    for (const char* t : {"<unk>", "<s>", "<|endoftext|>"})
      if (int32_t id = v.find(t); id >= 0) v.tokens[id].attr &= ~kAttrRstrip;
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  const TokenizerImpl& v = *impl_;
  std::vector<int32_t> out;
  if (v.type == VocabType::kNone) return out;

  // Split out special tokens, longest first, left to right within each raw fragment.
  std::vector<Fragment> frags;
  if (!text.empty()) frags.push_back({-1, 0, text.size()});
  for (int32_t sid : v.special_tokens) {
    const TokenData& st = v.tokens[sid];
    if (!parse_special && (st.attr & (kAttrControl | kAttrUnknown))) continue;
    std::vector<Fragment> next;
    next.reserve(frags.size());
    for (const Fragment& fr : frags) {
      if (fr.token >= 0) {
        next.push_back(fr);
        continue;
      }
      size_t off = fr.off, len = fr.len;
      while (true) {
        size_t hit = text.substr(0, off + len).find(st.text, off);
        if (hit == std::string_view::npos) {
          if (len > 0) next.push_back({-1, off, len});
          break;
        }
        size_t left = hit - off;
        if (st.attr & kAttrLstrip)
          while (left > 0 && std::isspace(static_cast<unsigned char>(text[off + left - 1]))) --left;
        if (left > 0) next.push_back({-1, off, left});
        next.push_back({sid, 0, 0});
        size_t roff = hit + st.text.size();
        size_t rlen = off + len - roff;
        if (st.attr & kAttrRstrip)
          while (rlen > 0 && std::isspace(static_cast<unsigned char>(text[roff]))) ++roff, --rlen;
        off = roff, len = rlen;
        if (len == 0) break;
      }
    }
    frags = std::move(next);
  }

  switch (v.type) {
    case VocabType::kSpm: {
      bool prev_special = true;
      if (add_special && v.add_bos && v.bos >= 0) out.push_back(v.bos);
      for (const Fragment& fr : frags) {
        if (fr.token >= 0) {
          out.push_back(fr.token);
          prev_special = true;
          continue;
        }
        std::string s;
        if (v.add_space_prefix && prev_special) s = " ";
        s.append(text.substr(fr.off, fr.len));
        replace_all(&s, " ", kSpaceMark);
        v.encode_spm(s, &out);
        prev_special = false;
      }
      if (add_special && v.add_eos && v.eos >= 0) out.push_back(v.eos);
      break;
    }
    case VocabType::kBpe: {
      if (add_special && v.add_bos && v.bos >= 0) out.push_back(v.bos);
      for (const Fragment& fr : frags) {
        if (fr.token >= 0) out.push_back(fr.token);
        else v.encode_bpe(text.substr(fr.off, fr.len), &out);
      }
      if (add_special && v.add_eos && v.eos >= 0) out.push_back(v.eos);
      break;
    }
    case VocabType::kWpm: {
      if (add_special && v.bos >= 0) out.push_back(v.bos);
      for (const Fragment& fr : frags) {
        if (fr.token >= 0) out.push_back(fr.token);
        else v.encode_wpm(text.substr(fr.off, fr.len), &out);
      }
      if (add_special && v.sep >= 0) out.push_back(v.sep);
      break;
    }
    case VocabType::kNone:
      break;
  }
  return out;
}

std::string Tokenizer::token_to_piece(int32_t id, bool special) const { return impl_->piece(id, special); }

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool special) const {
  const TokenizerImpl& v = *impl_;
  std::string text;
  bool remove_space = v.add_space_prefix;
  for (int32_t id : ids) {
    std::string p = v.piece(id, special);
    if (remove_space && !p.empty() && p[0] == ' ') p.erase(0, 1);
    remove_space = false;
    text += p;
  }
  if (!v.clean_spaces || text.empty()) return text;
  // The peer's clean-up passes: " ?", " !", " .", " ," lose the space; " ' " loses both spaces;
  // " 's", " 'm", " 're", " 've" lose the space.
  std::string a;
  a.push_back(text[0]);
  for (size_t i = 1; i < text.size(); ++i) {
    const char x = text[i];
    if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) a.pop_back();
    a.push_back(x);
  }
  std::string b;
  b.push_back(a[0]);
  for (size_t i = 1; i < a.size(); ++i) {
    const char x = a[i];
    if (x == '\'' && i + 1 < a.size() && a[i - 1] == ' ' && a[i + 1] == ' ') {
      b.pop_back();
      b.push_back(x);
      ++i;  // drop the next space
      continue;
    }
    b.push_back(x);
  }
  std::string c;
  c.push_back(b[0]);
  for (size_t i = 1; i < b.size(); ++i) {
    const char x = b[i];
    if (b[i - 1] == ' ' && x == '\'' && i + 1 < b.size()) {
      const char x1 = b[i + 1];
      if (x1 == 's' || x1 == 'm') {
        c.pop_back();
      } else if (i + 2 < b.size() && ((x1 == 'r' && b[i + 2] == 'e') || (x1 == 'v' && b[i + 2] == 'e'))) {
        c.pop_back();
      }
    }
    c.push_back(x);
  }
  return c;
}

VocabType Tokenizer::type() const { return impl_->type; }
int32_t Tokenizer::n_vocab() const { return static_cast<int32_t>(impl_->tokens.size()); }
int32_t Tokenizer::bos() const { return impl_->bos; }
int32_t Tokenizer::eos() const { return impl_->eos; }
int32_t Tokenizer::eot() const { return impl_->eot; }
int32_t Tokenizer::unk() const { return impl_->unk; }
int32_t Tokenizer::pad() const { return impl_->pad; }
int32_t Tokenizer::newline() const {
  // SPM encodes "\n" with the space prefix; its linefeed is the byte token, as in the peer.
  if (type() == VocabType::kSpm)
    if (int32_t id = find_token("<0x0A>"); id >= 0) return id;
  const std::vector<int32_t> ids = encode("\n", /*add_special=*/false);
  return ids.size() == 1 ? ids[0] : -1;
}
bool Tokenizer::add_bos() const { return impl_->add_bos; }
bool Tokenizer::add_eos() const { return impl_->add_eos; }
bool Tokenizer::is_eog(int32_t id) const {
  return id >= 0 && std::binary_search(impl_->eog_ids.begin(), impl_->eog_ids.end(), id);
}
TokenType Tokenizer::token_type(int32_t id) const {
  if (id < 0 || id >= n_vocab()) return TokenType::kUndefined;
  const uint32_t a = impl_->tokens[id].attr;
  if (a & kAttrByte) return TokenType::kByte;
  if (a & kAttrUserDefined) return TokenType::kUserDefined;
  if (a & kAttrControl) return TokenType::kControl;
  if (a & kAttrUnused) return TokenType::kUnused;
  if (a & kAttrUnknown) return TokenType::kUnknown;
  if (a & kAttrNormal) return TokenType::kNormal;
  return TokenType::kUndefined;
}
const std::string& Tokenizer::token_text(int32_t id) const {
  static const std::string kEmpty;
  return id < 0 || id >= n_vocab() ? kEmpty : impl_->tokens[id].text;
}
int32_t Tokenizer::find_token(std::string_view text) const { return impl_->find(text); }

}  // namespace expertmesh
