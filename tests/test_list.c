/*  test_list.c - the intrusive list of common/zx_list.h: order after pushes
    at both ends, removal of the head, the tail, a middle and the only
    element (links reset, size kept), pop_front until empty, and take_all
    onto empty and non-empty lists, take_front at a middle element and at
    the tail. */
#include "zx_list.h"

#include <criterion/criterion.h>

typedef struct {
    int value;
    zx__link_t link;
} item_t;

/* The list's values front to back into out; checks the back links agree
   and the size matches. Returns the count. */
static size_t s_values(const zx__list_t *l, int *out, size_t cap)
{
    size_t n = 0;
    const zx__link_t *prev = NULL;
    for (const zx__link_t *k = l->head; k; k = k->next) {
        cr_assert_eq(k->prev, prev, "back link of element %zu", n);
        cr_assert_lt(n, cap);
        out[n++] = ZX__CONTAINER(k, const item_t, link)->value;
        prev = k;
    }
    cr_assert_eq(l->tail, prev, "tail is the last element");
    cr_assert_eq(l->size, n, "size %zu, walked %zu", l->size, n);
    return n;
}

static void s_expect(const zx__list_t *l, const int *want, size_t n)
{
    int got[16];
    cr_assert_eq(s_values(l, got, 16), n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(got[i], want[i], "element %zu: %d, not %d", i, got[i], want[i]);
    }
}

Test(list, pushes_at_both_ends_keep_order)
{
    item_t it[5];
    zx__list_t l;
    zx__list_init(&l);
    cr_assert(zx__list_empty(&l));
    for (int i = 0; i < 5; i++) {
        it[i].value = i;
        zx__link_init(&it[i].link);
    }
    zx__list_push_back(&l, &it[2].link);
    zx__list_push_back(&l, &it[3].link);
    zx__list_push_front(&l, &it[1].link);
    zx__list_push_back(&l, &it[4].link);
    zx__list_push_front(&l, &it[0].link);
    cr_assert_not(zx__list_empty(&l));
    s_expect(&l, (int[]){0, 1, 2, 3, 4}, 5);
}

Test(list, removes_head_tail_middle_and_the_only_element)
{
    item_t it[4];
    zx__list_t l;
    zx__list_init(&l);
    for (int i = 0; i < 4; i++) {
        it[i].value = i;
        zx__list_push_back(&l, &it[i].link);
    }
    zx__list_remove(&l, &it[2].link); /* middle */
    cr_assert_null(it[2].link.prev);
    cr_assert_null(it[2].link.next);
    s_expect(&l, (int[]){0, 1, 3}, 3);
    zx__list_remove(&l, &it[0].link); /* head */
    s_expect(&l, (int[]){1, 3}, 2);
    zx__list_remove(&l, &it[3].link); /* tail */
    s_expect(&l, (int[]){1}, 1);
    zx__list_remove(&l, &it[1].link); /* the only one */
    cr_assert(zx__list_empty(&l));
    cr_assert_null(l.tail);
    cr_assert_eq(l.size, 0);
    /* a removed element can go back */
    zx__list_push_front(&l, &it[2].link);
    s_expect(&l, (int[]){2}, 1);
}

Test(list, pop_front_returns_in_order_then_null)
{
    item_t it[3];
    zx__list_t l;
    zx__list_init(&l);
    for (int i = 0; i < 3; i++) {
        it[i].value = 10 + i;
        zx__list_push_back(&l, &it[i].link);
    }
    for (int i = 0; i < 3; i++) {
        zx__link_t *k = zx__list_pop_front(&l);
        cr_assert_not_null(k);
        cr_assert_eq(ZX__CONTAINER(k, item_t, link)->value, 10 + i);
        cr_assert_null(k->next);
        cr_assert_eq(l.size, (size_t)(2 - i));
    }
    cr_assert_null(zx__list_pop_front(&l));
    cr_assert(zx__list_empty(&l));
}

Test(list, take_all_appends_in_order_and_empties_the_source)
{
    item_t it[5];
    zx__list_t a, b;
    zx__list_init(&a);
    zx__list_init(&b);
    for (int i = 0; i < 5; i++) {
        it[i].value = i;
    }
    zx__list_take_all(&a, &b); /* both empty */
    cr_assert(zx__list_empty(&a));
    zx__list_push_back(&b, &it[0].link);
    zx__list_push_back(&b, &it[1].link);
    zx__list_take_all(&a, &b); /* onto an empty list */
    s_expect(&a, (int[]){0, 1}, 2);
    s_expect(&b, NULL, 0);
    zx__list_push_back(&b, &it[2].link);
    zx__list_push_back(&b, &it[3].link);
    zx__list_push_back(&b, &it[4].link);
    zx__list_take_all(&a, &b); /* onto a non-empty one */
    s_expect(&a, (int[]){0, 1, 2, 3, 4}, 5);
    cr_assert(zx__list_empty(&b));
    cr_assert_eq(b.size, 0);
    zx__list_take_all(&a, &b); /* from an empty one: unchanged */
    s_expect(&a, (int[]){0, 1, 2, 3, 4}, 5);
}

Test(list, take_front_splits_after_the_given_element)
{
    item_t it[4];
    zx__list_t from, to;
    zx__list_init(&from);
    for (int i = 0; i < 4; i++) {
        it[i].value = i;
        zx__list_push_back(&from, &it[i].link);
    }
    zx__list_init(&to);
    zx__list_take_front(&to, &from, &it[1].link);
    s_expect(&to, (int[]){0, 1}, 2);
    s_expect(&from, (int[]){2, 3}, 2);
    cr_assert_null(from.head->prev, "the new head has no back link");
    zx__list_t rest;
    zx__list_init(&rest);
    zx__list_take_front(&rest, &from, &it[3].link); /* all of it */
    s_expect(&rest, (int[]){2, 3}, 2);
    cr_assert(zx__list_empty(&from));
    cr_assert_null(from.tail);
    cr_assert_eq(from.size, 0);
}
