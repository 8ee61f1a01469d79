#include "common/tiny_corpus.h"

#include <cstddef>

namespace mfpo {

std::vector<std::string> TinyTokenizerCorpus() {
  const std::vector<std::string> objects = {
      "cat",    "dog",   "car",    "tree",   "house", "ball",  "cup",    "chair", "table",
      "bird",   "boat",  "apple",  "banana", "clock", "lamp",  "flower", "horse", "person",
      "bottle", "book",  "phone",  "bus",    "truck", "bench", "sheep",  "cow",   "kite",
      "umbrella", "bicycle", "sun", "cloud", "circle", "square", "triangle", "star", "heart"};
  const std::vector<std::string> colours = {"red",   "green", "blue",  "yellow", "orange",
                                            "purple", "pink", "brown", "black",  "white", "gray"};
  const std::vector<std::string> sizes = {"small", "large", "big", "tiny", "medium"};
  const std::vector<std::string> places = {"on the left", "on the right", "at the top",
                                           "at the bottom", "in the center", "in the corner",
                                           "next to the", "behind the", "in front of the"};
  const std::vector<std::string> numbers = {"no", "one", "two", "three", "four", "five"};
  std::vector<std::string> corpus;
  size_t k = 0;
  for (size_t i = 0; i < objects.size(); ++i) {
    for (size_t j = 0; j < colours.size(); ++j, ++k) {
      const std::string& o = objects[i];
      const std::string& o2 = objects[(i * 7 + j * 3 + 1) % objects.size()];
      const std::string& c = colours[j];
      const std::string& c2 = colours[(j + i + 3) % colours.size()];
      const std::string& s = sizes[k % sizes.size()];
      const std::string& p = places[k % places.size()];
      const std::string& n = numbers[k % numbers.size()];
      corpus.push_back("The image shows a " + s + " " + c + " " + o + " " + p + " " + o2 + ".");
      corpus.push_back("There is a " + c + " " + o + " and a " + c2 + " " + o2 +
                       " on a plain background.");
      corpus.push_back("Is there a " + o + " in the image? Yes, there is a " + c + " " + o +
                       ". No, there is no " + o2 + ".");
      corpus.push_back("How many " + o + "s are there? There are " + n + " " + o + "s.");
      corpus.push_back("What color is the " + o + "? The " + o + " is " + c + ".");
      corpus.push_back("Describe the image in detail. I can see " + n + " " + c2 + " " + o2 +
                       "s and a " + c + " " + o + " " + p + " picture.");
      corpus.push_back("USER: What's the content of the image? ASSISTANT: A " + c + " " + o +
                       ", " + std::to_string(k) + " objects, " + std::to_string(k * 37 % 1000) +
                       " pixels.");
    }
  }
  return corpus;
}

std::string TinyTokenizerTrainerArgs(int vocab_size) {
  return "--vocab_size=" + std::to_string(vocab_size) +
         " --model_type=bpe --byte_fallback=true --split_digits=true"
         " --normalization_rule_name=identity --remove_extra_whitespaces=false"
         " --add_dummy_prefix=true --character_coverage=1.0 --unk_id=0 --bos_id=1 --eos_id=2"
         " --pad_id=-1 --num_threads=1 --minloglevel=2 --hard_vocab_limit=false"
         " --allow_whitespace_only_pieces=true --max_sentence_length=4192";
}

}  // namespace mfpo
