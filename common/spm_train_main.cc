// mfpo-spm-train: the only program that links libsentencepiece (see sentencepiece_model.h).
//
//   mfpo-spm-train train OUT.model [VOCAB]   trains the tiny tokenizer on the built-in corpus
//   mfpo-spm-train encode MODEL              reads lines on stdin, prints space-separated ids
//                                            (the reference the tokenizer tests compare to)
// Includes no Abseil header: SentencePiece's header redefines absl::string_view.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "common/tiny_corpus.h"

namespace {

class VectorIterator final : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& v) : v_(v) {}
  bool done() const override { return i_ >= v_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return v_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& v_;
  size_t i_ = 0;
};

int Train(const std::string& out_path, int vocab) {
  const std::vector<std::string> corpus = mfpo::TinyTokenizerCorpus();
  VectorIterator it(corpus);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      mfpo::TinyTokenizerTrainerArgs(vocab), &it, &model);
  if (!status.ok()) {
    std::cerr << "mfpo-spm-train: " << status.ToString() << "\n";
    return 1;
  }
  const std::string tmp = out_path + ".tmp";
  std::ofstream out(tmp, std::ios::binary);
  out << model;
  out.close();
  if (!out || std::rename(tmp.c_str(), out_path.c_str()) != 0) {
    std::cerr << "mfpo-spm-train: cannot write " << out_path << "\n";
    return 1;
  }
  return 0;
}

int Encode(const std::string& model_path) {
  sentencepiece::SentencePieceProcessor sp;
  const auto status = sp.Load(model_path);
  if (!status.ok()) {
    std::cerr << "mfpo-spm-train: " << model_path << ": " << status.ToString() << "\n";
    return 1;
  }
  std::string line;
  while (std::getline(std::cin, line)) {
    std::vector<int> ids;
    sp.Encode(line, &ids);
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
    std::cout << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string usage = "usage: mfpo-spm-train train OUT.model [VOCAB] | encode MODEL < lines";
  if (argc >= 3 && std::string(argv[1]) == "train")
    return Train(argv[2], argc >= 4 ? std::stoi(argv[3]) : mfpo::kTinyTokenizerVocab);
  if (argc == 3 && std::string(argv[1]) == "encode") return Encode(argv[2]);
  std::cerr << usage << "\n";
  return 2;
}
