#include "coordinator/sweep/recipes.h"

#include <gtest/gtest.h>

namespace expertmesh::coordinator {
namespace {

TEST(Recipes, ParsesPresetsFlagsFilesCommentsAndContinuations) {
  const char* text =
      "# a comment\n"
      "\n"
      "Q8_0: Q8_0\n"
      "MIX: IQ4_KS --custom-q \"ffn_down_exps=IQ5_KS,attn_.*=Q8_0\" \\\n"
      "     --output-tensor-type 'Q8_0'\n"
      "num: 145\n";
  auto r = parse_recipes(text, "r.txt");
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0].name, "Q8_0");
  EXPECT_EQ((*r)[0].type, "Q8_0");
  EXPECT_TRUE((*r)[0].args.empty());
  EXPECT_EQ((*r)[0].line, 3);
  const Recipe& mix = (*r)[1];
  EXPECT_EQ(mix.line, 4);
  EXPECT_EQ(mix.type, "IQ4_KS");
  ASSERT_EQ(mix.args.size(), 4u);
  EXPECT_EQ(mix.args[0], "--custom-q");
  EXPECT_EQ(mix.args[1], "ffn_down_exps=IQ5_KS,attn_.*=Q8_0");
  EXPECT_EQ(mix.args[3], "Q8_0");
  EXPECT_FALSE(mix.is_file());
  EXPECT_EQ((*r)[2].type, "145");  // llama_ftype number of IQ4_KS
  // An unquoted space splits a path into two words: a file= recipe must quote it.
  EXPECT_FALSE(parse_recipes("peer: file=/models/x y.gguf\n", "r.txt").ok());
}

TEST(Recipes, ErrorsNameTheFileAndLine) {
  struct Case {
    const char* text;
    const char* want;
  } cases[] = {
      {"Q8_0 Q8_0\n", "r.txt:1: expected"},
      {"a: Q8_0\na: Q4_0\n", "r.txt:2: recipe name 'a' is used twice"},
      {"\n\nx: NOT_A_TYPE\n", "r.txt:3: unknown quantization type 'NOT_A_TYPE'"},
      {"bad name: Q8_0\n", "r.txt:1: recipe name 'bad name'"},
      {"x: Q8_0 --custom-q \"oops\n", "r.txt:1: unterminated \""},
      {"x: file=a.gguf --pure\n", "r.txt:1: a file= recipe takes no flags"},
      {"x:\n", "r.txt:1: recipe 'x' has no type"},
      {"# only a comment\n", "r.txt: no recipes"},
  };
  for (const auto& c : cases) {
    auto r = parse_recipes(c.text, "r.txt");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(std::string(r.status().message()).find(c.want), std::string::npos) << r.status().message();
  }
}

TEST(Recipes, FileRecipes) {
  auto r = parse_recipes("peer: file='/models/x y.gguf'\n", "r.txt");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE((*r)[0].is_file());
  EXPECT_EQ((*r)[0].gguf_path, "/models/x y.gguf");
}

TEST(Recipes, SplitWordsLikeAShell) {
  auto w = split_words(R"(  a 'b c' "d \" e" f\ g h"i"j  )");
  ASSERT_TRUE(w.ok());
  ASSERT_EQ(w->size(), 5u);
  EXPECT_EQ((*w)[0], "a");
  EXPECT_EQ((*w)[1], "b c");
  EXPECT_EQ((*w)[2], "d \" e");
  EXPECT_EQ((*w)[3], "f g");
  EXPECT_EQ((*w)[4], "hij");
  EXPECT_FALSE(split_words("'open").ok());
}

TEST(Recipes, HashIsStableAndSensitiveToEveryInput) {
  auto r = parse_recipes("a: IQ4_KS --pure\nb: IQ4_KS --pure\nc: IQ4_KS\nd: IQ4_KSS --pure\n", "r.txt");
  ASSERT_TRUE(r.ok());
  const std::string h = recipe_hash((*r)[0], "base1", "imat1");
  EXPECT_EQ(h.size(), 64u);
  EXPECT_EQ(h, recipe_hash((*r)[0], "base1", "imat1"));
  EXPECT_EQ(h, recipe_hash((*r)[1], "base1", "imat1"));  // the name does not change the file
  EXPECT_NE(h, recipe_hash((*r)[2], "base1", "imat1"));
  EXPECT_NE(h, recipe_hash((*r)[3], "base1", "imat1"));
  EXPECT_NE(h, recipe_hash((*r)[0], "base2", "imat1"));
  EXPECT_NE(h, recipe_hash((*r)[0], "base1", "imat2"));
  EXPECT_NE(h, recipe_hash((*r)[0], "base1imat1", ""));  // fields cannot run into each other
}

}  // namespace
}  // namespace expertmesh::coordinator
