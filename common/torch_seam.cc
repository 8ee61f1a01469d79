#include "common/torch_seam.h"

#include <c10/util/Exception.h>

#include <opencv2/core.hpp>

namespace mfpo::internal {

std::string CurrentExceptionMessage() {
  try {
    throw;
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    return msg.substr(0, msg.find('\n'));
  } catch (const cv::Exception& e) {
    return "OpenCV: " + e.msg;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception";
  }
}

}  // namespace mfpo::internal
