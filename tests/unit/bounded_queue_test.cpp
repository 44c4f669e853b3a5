#include "server/common/bounded_queue.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace otahub {
namespace {

std::vector<int> drain(BoundedQueue<int>& q) { return q.take(q.size()); }

TEST(BoundedQueue, TakesInArrivalOrderInBatches) {
    BoundedQueue<int> q{10};
    for (int i = 1; i <= 5; ++i) q.push(i);
    EXPECT_EQ(q.take(2), (std::vector<int>{1, 2}));
    EXPECT_EQ(q.take(10), (std::vector<int>{3, 4, 5}));
    EXPECT_TRUE(q.take(3).empty());
    EXPECT_TRUE(q.empty());
    EXPECT_EQ(q.take_dropped(), 0U);
}

TEST(BoundedQueue, PushDropsTheOldestWhenFullAndCountsThem) {
    BoundedQueue<int> q{3};
    for (int i = 1; i <= 5; ++i) q.push(i);
    EXPECT_EQ(q.size(), 3U);
    EXPECT_EQ(q.take_dropped(), 2U);
    EXPECT_EQ(q.take_dropped(), 0U) << "the count resets";
    EXPECT_EQ(drain(q), (std::vector<int>{3, 4, 5}));
}

TEST(BoundedQueue, PutBackGoesInFrontInOrder) {
    BoundedQueue<int> q{10};
    for (int i = 1; i <= 4; ++i) q.push(i);
    auto batch = q.take(3);
    q.push(5);  // arrived while the batch was being written
    q.put_back(std::move(batch));
    EXPECT_EQ(drain(q), (std::vector<int>{1, 2, 3, 4, 5}));
    EXPECT_EQ(q.take_dropped(), 0U);
}

TEST(BoundedQueue, PutBackKeepsWhatArrivedSinceAndDropsTheOldestOfTheBatch) {
    BoundedQueue<int> q{4};
    for (int i = 1; i <= 4; ++i) q.push(i);
    auto batch = q.take(3);  // 1, 2, 3
    q.push(5);
    q.push(6);  // 4, 5, 6: room for one of the batch
    q.put_back(std::move(batch));
    EXPECT_EQ(drain(q), (std::vector<int>{3, 4, 5, 6}));
    EXPECT_EQ(q.take_dropped(), 2U);
}

TEST(BoundedQueue, MovesItsItems) {
    BoundedQueue<std::string> q{2};
    q.push(std::string(100, 'a'));
    auto taken = q.take(1);
    ASSERT_EQ(taken.size(), 1U);
    EXPECT_EQ(taken[0], std::string(100, 'a'));
    EXPECT_EQ(BoundedQueue<int>{0}.capacity(), 1U) << "a queue holds at least one item";
}

}  // namespace
}  // namespace otahub
