// placeholder
#include <gtest/gtest.h>
TEST(Emulator, Placeholder) {}
