// Byte-level BPE (tokenizer.ggml.model = "gpt2"): pre-tokenizer regexes per tokenizer.ggml.pre,
// GPT-2 byte-to-unicode encoding, merges by rank. Matches the peer's llm_tokenizer_bpe.
//
// Regex semantics. The peer runs most split regexes through std::regex on a "collapsed" text
// (every non-ASCII code point replaced by one byte standing for its category) and three
// (gpt-2, llama3, qwen2) through hand-written matchers. We run all of them through PCRE2 in
// UTF + UCP mode on the real code points, after two substitutions that reproduce the peer's
// classification exactly:
//   - every non-ASCII whitespace code point becomes U+000B (the peer does the same; it also makes
//     U+0085 match \s, which PCRE2 alone would not);
//   - for a "collapsed" regex (one using \p{..} that is not one of the hand-written ones), '~'
//     becomes U+E000 in both the text and the regex: the peer's collapsed \p{S} omits '~'
//     (its ASCII symbol list is $+<=>^`|), and U+E000 (category Co) behaves like that '~'.
//     \p{Lu} \p{Ll} \p{Lt} \p{Lm} \p{Lo} become \p{L}, as the peer's collapsing makes them.
// `$` matches only at the very end of a chunk (PCRE2_DOLLAR_ENDONLY), as in ECMAScript.
#include <algorithm>
#include <queue>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <fmt/format.h>

#include "model/tokenizer/tokenizer_impl.h"
#include "model/tokenizer/unicode.h"

namespace expertmesh {

namespace {

// The split expressions (regex text, as in the HF tokenizer.json files / the peer's table).
constexpr const char* kGpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
constexpr const char* kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kDeepseekLlmLetters =  // the peer's letter list, code points escaped
    R"(\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-)"
    R"(\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-)"
    R"(\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-)"
    R"(\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77})"
    R"(\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-)"
    R"(\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE})"
    R"(\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-)"
    R"(\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124})"
    R"(\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149})"
    R"(\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3})"
    R"(\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-)"
    R"(\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F})"
    R"(\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF})"
    R"(\x{1E900}-\x{1E943}]+)";
constexpr const char* kCjk = R"([一-龥ࠀ-一가-퟿]+)";
constexpr const char* kPoro = R"( ?[^(\s|.,!?…。，、।۔،)]+)";

struct PreSpec {
  std::vector<const char*> names;
  std::vector<const char*> regexes;
  bool ignore_merges = false;
  bool clean_spaces = true;
  bool add_bos = false;
};

const std::vector<PreSpec>& pre_specs() {
  static const std::vector<PreSpec> kSpecs = {
      {{"default"}, {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", "[0-9][0-9][0-9]"}},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"}, {kLlama3}, true, true, true},
      {{"dbrx", "smaug-bpe"}, {kLlama3}},
      {{"deepseek-llm"},
       {"[\r\n]", kDeepseekLlmLetters, R"(\s?[!-/:-~！-／：-～‘-‟　-。]+)", R"(\s+$)", kCjk, R"(\p{N}+)"},
       false, false},
      {{"deepseek-v3"},
       {R"(\p{N}{1,3})", R"([一-龥぀-ゟ゠-ヿ]+)",
        R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
       false, false},
      {{"deepseek-coder"}, {"[\r\n]", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kCjk, R"(\p{N})"}, false, false},
      {{"falcon"}, {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2, "[0-9][0-9][0-9]"}},
      {{"starcoder", "refact", "codeshell", "exaone", "minerva-7b"}, {R"(\p{N})", kGpt2}},
      {{"command-r", "smollm"}, {R"(\p{N})", kGpt2}, false, false},
      {{"gpt-2", "phi-2", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de", "jina-v1-en", "jina-v2-code",
        "roberta-bpe", "mpt", "olmo", "jais", "exaone4", "gigachat", "mellum", "modern-bert", "a.x-4.0"},
       {kGpt2}},
      {{"qwen2", "deepseek-r1-qwen", "megrez", "kormo", "openpangu", "f2llmv2"}, {kQwen2}, false, false},
      {{"stablelm2", "hunyuan"}, {kQwen2}},
      {{"poro-chat", "bloom", "gpt3-finnish"}, {kPoro}, false, true},
      {{"viking"}, {kPoro, R"(\p{N})"}, false, false},
      {{"chatglm-bpe", "glm4"}, {kLlama3}},
  };
  return kSpecs;
}

bool uses_category(const std::string& re) {
  for (const char* c : {"\\p{N}", "\\p{L}", "\\p{P}", "\\p{M}", "\\p{S}"})
    if (re.find(c) != std::string::npos) return true;
  return false;
}

void replace_all(std::string* s, std::string_view from, std::string_view to) {
  for (size_t pos = 0; (pos = s->find(from, pos)) != std::string::npos; pos += to.size()) s->replace(pos, from.size(), to);
}

// Text prepared for matching: UTF-8 of the (substituted) code points plus each one's byte offset.
struct Subject {
  std::string s;
  std::vector<uint32_t> off;  // size n+1
  size_t cpt_at(size_t byte) const {
    return static_cast<size_t>(std::lower_bound(off.begin(), off.end(), static_cast<uint32_t>(byte)) - off.begin());
  }
};

Subject make_subject(const std::vector<uint32_t>& cpts, bool tilde) {
  Subject sub;
  sub.s.reserve(cpts.size() + cpts.size() / 2);
  sub.off.reserve(cpts.size() + 1);
  for (uint32_t c : cpts) {
    sub.off.push_back(static_cast<uint32_t>(sub.s.size()));
    if (c >= 0x80 && tok::is_whitespace(c)) c = 0x0B;
    else if (c >= 0xD800 && c <= 0xDFFF) c = 0xE000;  // surrogates: class "other", as for the peer
    else if (tilde && c == '~') c = 0xE000;
    tok::append_utf8(&sub.s, c);
  }
  sub.off.push_back(static_cast<uint32_t>(sub.s.size()));
  return sub;
}

}  // namespace

PreTokenizer::~PreTokenizer() {
  for (Regex& r : regexes) pcre2_code_free(static_cast<pcre2_code*>(r.code));
}

Result<std::unique_ptr<PreTokenizer>> make_pre_tokenizer(const std::string& pre, bool* ignore_merges,
                                                         bool* clean_spaces, bool* add_bos) {
  const PreSpec* spec = nullptr;
  for (const PreSpec& s : pre_specs())
    for (const char* n : s.names)
      if (pre == n) spec = &s;
  if (!spec) return Status::Unsupported(fmt::format("key 'tokenizer.ggml.pre': unknown pre-tokenizer type '{}'", pre));
  *ignore_merges = spec->ignore_merges;
  *clean_spaces = spec->clean_spaces;
  if (spec->add_bos) *add_bos = true;
  auto pt = std::make_unique<PreTokenizer>();
  for (const char* re0 : spec->regexes) {
    std::string re = re0;
    const bool custom = re == kGpt2 || re == kLlama3 || re == kQwen2;
    PreTokenizer::Regex r;
    r.collapsed = !custom && uses_category(re);
    if (r.collapsed) {
      for (const char* sub : {"\\p{Lu}", "\\p{Ll}", "\\p{Lt}", "\\p{Lm}", "\\p{Lo}"}) replace_all(&re, sub, "\\p{L}");
      replace_all(&re, "~", "\\x{E000}");
    }
    int err = 0;
    PCRE2_SIZE erroff = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(re.data()), re.size(),
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &err, &erroff, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      return Status::Internal(fmt::format("pre-tokenizer '{}': regex '{}' does not compile at {}: {}", pre, re,
                                          erroff, reinterpret_cast<const char*>(msg)));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional: the interpreter is the fallback
    r.code = code;
    pt->regexes.push_back(r);
  }
  return pt;
}

std::vector<std::string> PreTokenizer::split(std::string_view text) const {
  const std::vector<uint32_t> cpts = tok::utf8_to_cpts(text);
  std::vector<size_t> lens;
  if (!cpts.empty()) lens.push_back(cpts.size());
  Subject plain, tilde;
  bool have_plain = false, have_tilde = false;
  pcre2_match_context* mctx = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* jstack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
  if (mctx && jstack) pcre2_jit_stack_assign(mctx, nullptr, jstack);
  for (const Regex& r : regexes) {
    auto* code = static_cast<pcre2_code*>(r.code);
    if (r.collapsed && !have_tilde) tilde = make_subject(cpts, true), have_tilde = true;
    if (!r.collapsed && !have_plain) plain = make_subject(cpts, false), have_plain = true;
    const Subject& sub = r.collapsed ? tilde : plain;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
    std::vector<size_t> out;
    out.reserve(lens.size() * 2);
    size_t start = 0;
    for (size_t len : lens) {
      const size_t bs = sub.off[start], be = sub.off[start + len];
      const auto* subj = reinterpret_cast<PCRE2_SPTR>(sub.s.data() + bs);
      const size_t blen = be - bs;
      size_t pos = 0, done = start;  // byte position in chunk; code points emitted so far
      while (pos < blen) {
        int rc = pcre2_match(code, subj, blen, pos, PCRE2_NO_UTF_CHECK, md, mctx);
        if (rc < 0) break;  // no match (or a resource limit: the rest stays one chunk)
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        if (ov[1] <= ov[0]) {  // empty match: step over one character
          pos = ov[0] + tok::utf8_len(static_cast<uint8_t>(subj[ov[0]]));
          continue;
        }
        const size_t cs = sub.cpt_at(bs + ov[0]), ce = sub.cpt_at(bs + ov[1]);
        if (cs > done) out.push_back(cs - done);
        out.push_back(ce - cs);
        done = ce;
        pos = ov[1];
      }
      if (start + len > done) out.push_back(start + len - done);
      start += len;
    }
    pcre2_match_data_free(md);
    lens = std::move(out);
  }
  if (jstack) pcre2_jit_stack_free(jstack);
  if (mctx) pcre2_match_context_free(mctx);
  std::vector<std::string> words;
  words.reserve(lens.size());
  size_t start = 0;
  for (size_t len : lens) {
    std::string w;
    for (size_t i = start; i < start + len; ++i) tok::append_utf8(&w, cpts[i]);
    words.push_back(std::move(w));
    start += len;
  }
  return words;
}

void TokenizerImpl::encode_bpe(std::string_view text, std::vector<int32_t>* out) const {
  struct Sym {
    int prev, next;
    size_t off, n;
  };
  struct Bigram {
    int left, right;
    int32_t rank;
    size_t size;
  };
  auto cmp = [](const Bigram& l, const Bigram& r) { return l.rank > r.rank || (l.rank == r.rank && l.left > r.left); };
  std::string key;
  for (const std::string& raw : pre_tokenizer->split(text)) {
    std::string word;
    word.reserve(raw.size() * 2);
    for (unsigned char b : raw) word += tok::byte_to_unicode(b);
    if (ignore_merges) {
      if (int32_t id = find(word); id >= 0) {
        out->push_back(id);
        continue;
      }
    }
    std::vector<Sym> syms;
    for (size_t off = 0; off < word.size();) {
      size_t n = std::min(tok::utf8_len(static_cast<uint8_t>(word[off])), word.size() - off);
      const int idx = static_cast<int>(syms.size());
      syms.push_back({idx - 1, off + n == word.size() ? -1 : idx + 1, off, n});
      off += n;
    }
    std::priority_queue<Bigram, std::vector<Bigram>, decltype(cmp)> queue(cmp);
    auto try_add = [&](int l, int r) {
      if (l < 0 || r < 0) return;
      key.assign(word, syms[l].off, syms[l].n);
      key.push_back(' ');
      key.append(word, syms[r].off, syms[r].n);
      auto it = bpe_ranks.find(key);
      if (it == bpe_ranks.end()) return;
      queue.push({l, r, it->second, syms[l].n + syms[r].n});
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
    for (const Sym& s : syms) {
      if (s.n == 0) continue;
      const std::string_view piece(word.data() + s.off, s.n);
      if (int32_t id = find(piece); id >= 0) {
        out->push_back(id);
        continue;
      }
      // The peer's fallback: each single byte of the piece that is itself a token.
      for (char c : piece)
        if (int32_t id = find(std::string_view(&c, 1)); id >= 0) out->push_back(id);
    }
  }
}

}  // namespace expertmesh
